"""The material's own record: a custody handoff (with its scanned label) and condition readings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from server.access.auth import check_roles
from server.custody import conditions, transfers
from server.store.models import CustodyTransfer, User
from server.workflow import therapies

from .checks import audits_refusals, visible_therapy


@dataclass(frozen=True)
class RecordCustody:
    """``by`` records that ``material_id`` passed from ``from_party`` to ``to_party`` (at ``location``, at
    ``occurred_at`` or now), the label scanned at the handoff reading ``scanned_coi``."""

    ROLES: ClassVar[tuple[str, ...]] = ("logistics", "manufacturing", "coordinator", "integrator")

    therapy_id: str
    material_id: str
    from_party: str
    to_party: str
    scanned_coi: str
    by: User
    location: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class RecordReadings:
    """``by`` (a data logger's integration, a courier) records condition ``readings`` of a therapy's material:
    each a dict with ``sensor_id``, ``temperature_c``, ``recorded_at``, ``shipment_id`` and ``location``."""

    ROLES: ClassVar[tuple[str, ...]] = ("logistics", "integrator")

    therapy_id: str
    readings: list[dict[str, Any]]
    by: User


@audits_refusals
def record_custody(command: RecordCustody) -> CustodyTransfer:
    """Record the handoff; 409 ``coi_mismatch`` (audited and alerted) when the label is another therapy's."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    return transfers.record_transfer(
        therapy,
        material_id=command.material_id.strip(),
        from_party=command.from_party.strip(),
        to_party=command.to_party.strip(),
        scanned_coi=command.scanned_coi,
        actor=command.by.username,
        location=(command.location or "").strip() or None,
        occurred_at=command.occurred_at,
    )


@audits_refusals
def record_readings(command: RecordReadings) -> dict[str, Any]:
    """Record the readings against the range that applies now; an excursion raises an alert and, when the
    process waits for it, is delivered to the process in the same transaction."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    return conditions.record_readings(
        therapy, command.readings, command.by.username, tell_process=therapies.deliver_waiting_message
    )
