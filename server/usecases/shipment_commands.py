"""Courier tracking: a therapy's shipments, the positions and data-logger readings their couriers report, the
expected arrival (warned about before the therapy's window is missed) and their delivery or loss."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from server.access.auth import can_see_therapy, check_roles
from server.custody import shipments
from server.errors import NotFound
from server.store.extensions import db
from server.store.models import Shipment, ShipmentPosition, Therapy, User
from server.workflow import therapies

from .checks import audits_refusals, visible_therapy

TRACKING_ROLES = ("logistics", "integrator", "admin")


@dataclass(frozen=True)
class CreateShipment:
    """``by`` records that ``carrier`` carries a therapy's material under ``tracking_number`` from ``from_party``
    to ``to_party`` (a party of the therapy, named by its party or site code, or any text), expected at
    ``expected_arrival``, travelling between ``temperature_min_c`` and ``temperature_max_c``."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "logistics", "integrator", "admin")

    therapy_id: str
    carrier: str
    tracking_number: str
    from_party: str
    to_party: str
    by: User
    expected_arrival: datetime | None = None
    temperature_min_c: float | None = None
    temperature_max_c: float | None = None


@dataclass(frozen=True)
class AddShipmentPosition:
    """``by`` (the courier, its integration) reports that the shipment was at ``latitude``, ``longitude`` at
    ``recorded_at`` (or now), with a ``note``, and perhaps a new ``expected_arrival``."""

    ROLES: ClassVar[tuple[str, ...]] = TRACKING_ROLES

    shipment_id: str
    latitude: float
    longitude: float
    by: User
    recorded_at: datetime | None = None
    note: str | None = None
    expected_arrival: datetime | None = None


@dataclass(frozen=True)
class RecordShipmentReadings:
    """``by`` uploads the shipment's data-logger ``readings``: each a dict with ``temperature_c``,
    ``recorded_at`` and perhaps ``sensor_id`` and ``location``."""

    ROLES: ClassVar[tuple[str, ...]] = TRACKING_ROLES

    shipment_id: str
    readings: list[dict[str, Any]]
    by: User


@dataclass(frozen=True)
class UpdateShipment:
    """``by`` changes the shipment's ``expected_arrival`` and/or marks it ``delivered`` or ``lost``."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "logistics", "integrator", "admin")

    shipment_id: str
    by: User
    expected_arrival: datetime | None = None
    status: str | None = None


def visible_shipment(user: User, shipment_id: str) -> tuple[Shipment, Therapy]:
    """The shipment and its therapy when ``user`` may see the therapy (one of their sites is a party of it); 404
    otherwise, as for a shipment that does not exist."""
    readable = len(shipment_id) <= 36 and "\x00" not in shipment_id  # no id is longer; PostgreSQL refuses NUL
    shipment = db.session.get(Shipment, shipment_id) if readable else None
    therapy = db.session.get(Therapy, shipment.therapy_id) if shipment is not None else None
    if shipment is None or therapy is None or not can_see_therapy(user, therapy):
        raise NotFound("No such shipment.", details={"shipment_id": shipment_id})
    return shipment, therapy


@audits_refusals
def create_shipment(command: CreateShipment) -> Shipment:
    """Record the shipment; 409 when the therapy has ended or already has that tracking number."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    return shipments.create(
        therapy,
        carrier=command.carrier.strip(),
        tracking_number=command.tracking_number.strip(),
        from_party=command.from_party,
        to_party=command.to_party,
        actor=command.by.username,
        expected_arrival=command.expected_arrival,
        temperature_min_c=command.temperature_min_c,
        temperature_max_c=command.temperature_max_c,
    )


@audits_refusals
def add_shipment_position(command: AddShipmentPosition) -> ShipmentPosition:
    """Append the position (and the new estimate, warning when it misses the window); 409 once delivered or lost."""
    check_roles(command.by, command.ROLES)
    shipment, therapy = visible_shipment(command.by, command.shipment_id)
    return shipments.add_position(
        shipment,
        therapy,
        latitude=command.latitude,
        longitude=command.longitude,
        actor=command.by.username,
        recorded_at=command.recorded_at,
        note=(command.note or "").strip() or None,
        expected_arrival=command.expected_arrival,
    )


@audits_refusals
def record_shipment_readings(command: RecordShipmentReadings) -> dict[str, Any]:
    """Record the readings as the therapy's condition readings of this shipment: an excursion raises its alert and
    is told to the process as any reading's."""
    check_roles(command.by, command.ROLES)
    shipment, therapy = visible_shipment(command.by, command.shipment_id)
    return shipments.record_readings(
        shipment, therapy, command.readings, command.by.username, tell_process=therapies.deliver_waiting_message
    )


@audits_refusals
def update_shipment(command: UpdateShipment) -> Shipment:
    """Change the estimate (warning when it misses the window) and/or close the shipment; 409 once closed."""
    check_roles(command.by, command.ROLES)
    shipment, therapy = visible_shipment(command.by, command.shipment_id)
    return shipments.update(
        shipment, therapy, command.by.username, expected_arrival=command.expected_arrival, status=command.status
    )
