"""Courier tracking: a therapy's shipments, their positions and data-logger readings, the expected arrival and the
delivery; and the courier's tracking messages (``shipment.position``, ``shipment.readings``, ``shipment.eta``)
taken from ``POST /messages`` and the broker alike."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from flask import g
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from engine.coi import parse_coi
from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import in_utc_years, load_json
from server.custody import conditions, shipments
from server.errors import Invalid, NotFound
from server.store.models import SHIPMENT_STATUSES, User
from server.usecases.checks import visible_therapy
from server.usecases.shipment_commands import visible_shipment

from . import bp

# The messages a courier sends about a shipment (with "shipment_id" in the payload): taken here, not by the engine.
MESSAGE_NAMES = ("shipment.position", "shipment.readings", "shipment.eta")
_TEXT = validate.Length(min=1, max=100)
_PARTY = validate.Length(min=1, max=200)
_TEMPERATURE = validate.Range(min=-273.15, max=1000)


def _moment(**kwargs) -> fields.AwareDateTime:
    return fields.AwareDateTime(default_timezone=UTC, validate=in_utc_years, **kwargs)


class ShipmentCreateSchema(Schema):
    """POST /therapies/{id}/shipments."""

    class Meta:
        unknown = RAISE

    carrier = fields.String(required=True, validate=_TEXT)
    tracking_number = fields.String(required=True, validate=_TEXT)
    from_party = fields.String(required=True, validate=_PARTY, metadata={"description": "a party or any text"})
    to_party = fields.String(required=True, validate=_PARTY, metadata={"description": "a party or any text"})
    expected_arrival = _moment(load_default=None, allow_none=True)
    temperature_min_c = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=_TEMPERATURE)
    temperature_max_c = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=_TEMPERATURE)

    @validates_schema
    def _range(self, data: dict, **_kwargs) -> None:
        low, high = data.get("temperature_min_c"), data.get("temperature_max_c")
        if low is not None and high is not None and low > high:
            raise ValidationError("Must not be below temperature_min_c.", "temperature_max_c")


class PositionSchema(Schema):
    """POST /shipments/{id}/positions: where the shipment is (and perhaps when it is now expected)."""

    class Meta:
        unknown = RAISE

    latitude = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=-90, max=90))
    longitude = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=-180, max=180))
    recorded_at = _moment(load_default=None, allow_none=True)
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    expected_arrival = _moment(
        load_default=None, allow_none=True, metadata={"description": "the courier's new estimate, if it has one"}
    )


class ShipmentReadingSchema(Schema):
    """One data-logger reading of a shipment."""

    class Meta:
        unknown = RAISE

    recorded_at = _moment(required=True)
    temperature_c = fields.Float(required=True, allow_nan=False, validate=_TEMPERATURE)
    sensor_id = fields.String(load_default=None, allow_none=True, validate=_TEXT)
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class ShipmentReadingsSchema(Schema):
    """POST /shipments/{id}/readings: a data logger's upload."""

    class Meta:
        unknown = RAISE

    readings = fields.List(
        fields.Nested(ShipmentReadingSchema), required=True, validate=validate.Length(min=1, max=conditions.MAX_BATCH)
    )


class ShipmentChangeSchema(Schema):
    """PATCH /shipments/{id}: a new expected arrival, and/or delivered or lost."""

    class Meta:
        unknown = RAISE

    expected_arrival = _moment(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(SHIPMENT_STATUSES))

    @validates_schema
    def _something(self, data: dict, **_kwargs) -> None:
        if data.get("expected_arrival") is None and data.get("status") is None:
            raise ValidationError("Give expected_arrival or status.", "_schema")


class EtaSchema(Schema):
    """The payload of the message ``shipment.eta`` (beside ``shipment_id``)."""

    class Meta:
        unknown = RAISE

    expected_arrival = _moment(required=True)


# -- answers ---------------------------------------------------------------------------------------------------
class _Answer(Schema):
    class Meta:
        unknown = INCLUDE


class ShipmentPositionSchema(_Answer):
    """One reported position of a shipment."""

    id = fields.Integer(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})
    latitude = fields.Float(required=True)
    longitude = fields.Float(required=True)
    note = fields.String(required=True, allow_none=True)
    recorded_by = fields.String(required=True)


class ShipmentWindowSchema(_Answer):
    """The therapy's window the shipment must meet: its earliest due timer now."""

    activity_id = fields.String(required=True, allow_none=True)
    label = fields.String(required=True)
    due_at = fields.String(required=True, metadata={"format": "date-time"})


class ShipmentSchema(_Answer):
    """A shipment: carrier, tracking number, parties, expected arrival, range, status, last position, window."""

    id = fields.String(required=True)
    therapy_id = fields.String(required=True)
    coi = fields.String(required=True)
    carrier = fields.String(required=True)
    tracking_number = fields.String(required=True)
    from_party = fields.String(required=True)
    to_party = fields.String(required=True)
    expected_arrival = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    temperature_min_c = fields.Float(required=True, allow_none=True)
    temperature_max_c = fields.Float(required=True, allow_none=True)
    temperature_range = fields.List(fields.Float(allow_none=True), required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(SHIPMENT_STATUSES))
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    created_by = fields.String(required=True)
    updated_at = fields.String(required=True, metadata={"format": "date-time"})
    last_position = fields.Nested(ShipmentPositionSchema, required=True, allow_none=True)
    window = fields.Nested(ShipmentWindowSchema, required=True, allow_none=True)
    late = fields.Boolean(required=True, metadata={"description": "expected after the window closes"})
    late_by_minutes = fields.Integer(required=True, allow_none=True)


class ShipmentDetailSchema(ShipmentSchema):
    """A shipment with all its positions and its data-logger readings (oldest first)."""

    positions = fields.List(fields.Nested(ShipmentPositionSchema), required=True)
    readings = fields.List(fields.Dict(), required=True)


class PositionRecordedSchema(_Answer):
    """The position recorded and the shipment as it is now."""

    position = fields.Nested(ShipmentPositionSchema, required=True)
    shipment = fields.Nested(ShipmentSchema, required=True)


class ShipmentListSchema(_Answer):
    """A therapy's shipments, oldest first."""

    items = fields.List(fields.Nested(ShipmentSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ShipmentReadingsResultSchema(_Answer):
    """What became of a data logger's upload: recorded, and whether any reading was outside the range."""

    shipment_id = fields.String(required=True)
    recorded = fields.Integer(required=True)
    excursions = fields.Integer(required=True)
    excursion = fields.Boolean(required=True)
    alert_id = fields.String(metadata={"description": "the alert raised (or already open) for the excursion"})


def _detail(shipment, therapy) -> dict[str, Any]:
    positions = shipments.positions(shipment.id)
    return {
        **shipments.shipment_item(shipment, therapy, last=positions[-1] if positions else None),
        "positions": [shipments.position_item(p) for p in positions],
        "readings": shipments.readings(shipment),
    }


def _readings_answer(result: dict[str, Any]) -> dict[str, Any]:
    out = {key: result[key] for key in ("shipment_id", "recorded", "excursions", "excursion")}
    if result["excursion"] and result.get("alert_id"):
        out["alert_id"] = result["alert_id"]
    return out


# -- routes ----------------------------------------------------------------------------------------------------
@bp.post("/therapies/<therapy_id>/shipments")
@require(*usecases.CreateShipment.ROLES)
@idempotent
def create_shipment(therapy_id: str):
    """Record a shipment of the therapy's material (carrier, tracking number, from, to, expected arrival, range)."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    shipment = usecases.create_shipment(
        usecases.CreateShipment(therapy_id=therapy_id, by=g.user, **load_json(ShipmentCreateSchema()))
    )
    _shipment, therapy = visible_shipment(g.user, shipment.id)
    return shipments.shipment_item(shipment, therapy), 201


@bp.get("/therapies/<therapy_id>/shipments")
@require()
def list_shipments(therapy_id: str):
    """The therapy's shipments, oldest first, each with its last position and whether it is late."""
    therapy = visible_therapy(g.user, therapy_id, state=False)
    return {
        "items": [shipments.shipment_item(s, therapy) for s in shipments.of_therapy(therapy.id)],
        "next_cursor": None,
    }


@bp.get("/shipments/<shipment_id>")
@require()
def get_shipment(shipment_id: str):
    """One shipment with its positions and data-logger readings."""
    shipment, therapy = visible_shipment(g.user, shipment_id)
    return _detail(shipment, therapy)


@bp.post("/shipments/<shipment_id>/positions")
@require(*usecases.AddShipmentPosition.ROLES)
@idempotent
def add_position(shipment_id: str):
    """Report where the shipment is (latitude, longitude, when) and perhaps its new expected arrival."""
    visible_shipment(g.user, shipment_id)
    body = load_json(PositionSchema())
    position = usecases.add_shipment_position(usecases.AddShipmentPosition(shipment_id=shipment_id, by=g.user, **body))
    shipment, therapy = visible_shipment(g.user, shipment_id)
    return {"position": shipments.position_item(position), "shipment": shipments.shipment_item(shipment, therapy)}, 201


@bp.post("/shipments/<shipment_id>/readings")
@require(*usecases.RecordShipmentReadings.ROLES)
@idempotent
def record_readings(shipment_id: str):
    """Upload the shipment's data-logger readings (up to 1,000); an excursion raises its alert as any reading's."""
    visible_shipment(g.user, shipment_id)
    readings = load_json(ShipmentReadingsSchema())["readings"]
    result = usecases.record_shipment_readings(
        usecases.RecordShipmentReadings(shipment_id=shipment_id, readings=readings, by=g.user)
    )
    return _readings_answer(result), 201


@bp.patch("/shipments/<shipment_id>")
@require(*usecases.UpdateShipment.ROLES)
def update_shipment(shipment_id: str):
    """Change the expected arrival (warned about when it misses the therapy's window) or mark delivered or lost."""
    visible_shipment(g.user, shipment_id)
    body = load_json(ShipmentChangeSchema())
    shipment = usecases.update_shipment(usecases.UpdateShipment(shipment_id=shipment_id, by=g.user, **body))
    _shipment, therapy = visible_shipment(g.user, shipment.id)
    return shipments.shipment_item(shipment, therapy), 200


# -- the courier's messages --------------------------------------------------------------------------------------
def is_shipment_message(body: dict) -> bool:
    """Whether a message (the parsed body of ``POST /messages``) is a courier's tracking of a shipment."""
    payload = body.get("payload")
    return body.get("name") in MESSAGE_NAMES and isinstance(payload, dict) and "shipment_id" in payload


def _payload(schema: Schema, payload: dict) -> dict:
    try:
        return schema.load(payload)
    except ValidationError as exc:
        raise Invalid(
            "The message's payload is not valid; see the fields.",
            code="invalid_payload",
            details={"fields": {"payload": exc.messages}},
        ) from None


def take_shipment_message(body: dict, user: User) -> tuple[dict, int]:
    """Take a courier's tracking message as the shipment endpoints would: a position (perhaps with a new
    estimate), a batch of readings, or a new estimate. 404 for an unknown or unseen shipment, or one of another
    therapy than the message names; 422 for a payload that is not valid (nothing is recorded)."""
    payload = dict(body["payload"])
    shipment_id = payload.pop("shipment_id")
    if not isinstance(shipment_id, str) or not shipment_id:
        raise Invalid(
            "shipment_id must be a shipment's id.",
            code="invalid_payload",
            details={"fields": {"payload": {"shipment_id": ["Not a valid string."]}}},
        )
    shipment, therapy = visible_shipment(user, shipment_id)
    if body.get("therapy_id") not in (None, therapy.id) or (
        body.get("coi") and not _same_coi(body["coi"], therapy.coi)
    ):
        raise NotFound("No such shipment of that therapy.", details={"shipment_id": shipment_id})
    answer: dict[str, Any] = {
        "delivered": True,
        "therapy_id": therapy.id,
        "shipment_id": shipment.id,
        "activity_id": None,
    }
    if body["name"] == "shipment.position":
        position = usecases.add_shipment_position(
            usecases.AddShipmentPosition(shipment_id=shipment.id, by=user, **_payload(PositionSchema(), payload))
        )
        answer["position"] = shipments.position_item(position)
    elif body["name"] == "shipment.readings":
        readings = _payload(ShipmentReadingsSchema(), payload)["readings"]
        result = usecases.record_shipment_readings(
            usecases.RecordShipmentReadings(shipment_id=shipment.id, readings=readings, by=user)
        )
        answer["readings"] = _readings_answer(result)
    else:
        usecases.update_shipment(
            usecases.UpdateShipment(shipment_id=shipment.id, by=user, **_payload(EtaSchema(), payload))
        )
    shipment, therapy = visible_shipment(user, shipment.id)
    answer["shipment"] = shipments.shipment_item(shipment, therapy)
    return answer, 200


def _same_coi(written: Any, coi: str) -> bool:
    try:
        return isinstance(written, str) and parse_coi(written).value == coi
    except ValueError:
        return False
