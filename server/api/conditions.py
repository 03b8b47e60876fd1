"""Condition readings of a therapy's material: post one reading or a batch, read the series back."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate

from engine.values import INT_MAX
from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import in_utc_years, load_json
from server.custody import conditions
from server.store.extensions import db
from server.usecases.checks import visible_therapy

from ..errors import BadRequest
from . import bp
from .filters import as_utc, moment_arg

MAX_LIMIT = 500
MAX_POINTS = 2000


class ReadingSchema(Schema):
    """One temperature reading."""

    class Meta:
        unknown = RAISE

    sensor_id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    temperature_c = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=-273.15, max=1000))
    recorded_at = fields.AwareDateTime(required=True, default_timezone=UTC, validate=in_utc_years)
    shipment_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class ReadingBatchSchema(Schema):
    """A batch of readings (a data logger's upload)."""

    class Meta:
        unknown = RAISE

    readings = fields.List(
        fields.Nested(ReadingSchema), required=True, validate=validate.Length(min=1, max=conditions.MAX_BATCH)
    )


@bp.post("/therapies/<therapy_id>/conditions")
@require(*usecases.RecordReadings.ROLES)
@idempotent
def record_conditions(therapy_id: str):
    """Record one reading, or ``{"readings": [...]}`` (up to 1,000), against the range that applies now."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    raw = request.get_json(silent=True)
    if isinstance(raw, dict) and "readings" in raw:
        readings = load_json(ReadingBatchSchema())["readings"]
    else:
        readings = [load_json(ReadingSchema())]
    result = usecases.record_readings(usecases.RecordReadings(therapy_id=therapy_id, readings=readings, by=g.user))
    if "readings" not in (raw or {}):
        result.pop("recorded")
        result.pop("excursions")
    if not result["excursion"]:
        result.pop("alert_id", None)
    return result, 201


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number.", code=f"invalid_{name}", details={"field": name}) from None
    if not low <= number <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}.", code=f"invalid_{name}", details={"field": name})
    return number


def _cursor() -> tuple[datetime, int] | None:
    value = request.args.get("cursor")
    if not value:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value.encode()).decode())
        after = as_utc(datetime.fromisoformat(decoded["t"])), decoded["i"]
        if type(after[1]) is not int or not 0 <= after[1] <= INT_MAX:
            raise ValueError("the id is not a 64-bit integer")
        return after
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise BadRequest(
            "cursor is not one this server handed out.", code="invalid_cursor", details={"field": "cursor"}
        ) from None


@bp.get("/therapies/<therapy_id>/conditions")
@require()
def list_conditions(therapy_id: str):
    """The readings in ``[from, to)`` oldest first (``limit``, ``cursor``), or ``points`` buckets for a chart."""
    therapy = visible_therapy(g.user, therapy_id)
    start, end = moment_arg("from"), moment_arg("to")
    if start and end and start >= end:
        raise BadRequest("'from' must be before 'to'.", code="invalid_filter", details={"field": "from"})
    limits, activity_id = conditions.allowed_range(therapy)
    out: dict = {"therapy_id": therapy.id, "range": limits, "activity_id": activity_id}
    points = _int_arg("points", None, 1, MAX_POINTS)
    if points is not None:
        out.update(
            {
                "downsampled": True,
                "points": points,
                "items": conditions.downsample(therapy.id, start, end, points),
                "next_cursor": None,
            }
        )
        return out
    limit = _int_arg("limit", 50, 1, MAX_LIMIT) or 50
    rows = db.session.execute(conditions.series_query(therapy.id, start, end, _cursor()).limit(limit + 1)).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = base64.urlsafe_b64encode(
            json.dumps({"t": last.recorded_at.isoformat(), "i": last.id}).encode()
        ).decode()
    out.update(
        {"downsampled": False, "items": [conditions.reading_item(r) for r in rows[:limit]], "next_cursor": next_cursor}
    )
    return out
