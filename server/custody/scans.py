"""Checking a scanned chain-of-identity (COI) label against the therapy it is meant for.

Every handoff and every task whose form has a ``scanned_coi`` field goes through :func:`verify_scan`.
A label that belongs to another therapy blocks the step: the refusal, a high-severity alert and the
``coi.mismatch`` event are committed in their own transaction (so they survive the refused request),
and the caller gets 409 ``coi_mismatch``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from engine.coi import Coi, CoiCheckFailed, CoiError, parse_coi
from server.errors import Conflict, Invalid
from server.integration import outbox
from server.oversight.alerts import raise_alert
from server.store import audit
from server.store.extensions import db
from server.store.models import Therapy
from server.store.uow import unit_of_work

SCAN_FIELD = "scanned_coi"


def parse_scan(scanned: Any, field: str = SCAN_FIELD) -> Coi:
    """The COI a scan or a typed label stands for; 422 ``coi_check_failed`` or ``coi_invalid`` otherwise."""
    try:
        return parse_coi(scanned)
    except CoiCheckFailed as exc:
        raise Invalid(exc.message, code="coi_check_failed", details={"field": field, "scanned": scanned}) from None
    except CoiError as exc:
        raise Invalid(exc.message, code="coi_invalid", details={"field": field, "scanned": scanned}) from None


def verify_scan(
    therapy: Therapy, scanned: Any, actor: str, *, context: dict[str, Any] | None = None, field: str = SCAN_FIELD
) -> Coi:
    """Return the scanned COI when it is ``therapy``'s; otherwise record the mismatch and raise 409.

    ``context`` says where the scan happened (a task, a custody transfer) and goes into the alert, the
    event and the audit entry together with exactly what was scanned.
    """
    coi = parse_scan(scanned, field)
    if coi.value == therapy.coi:
        return coi
    alert_id = record_mismatch(therapy, str(scanned), coi, actor, context or {})
    raise Conflict(
        f"The scanned label ({coi.eye_readable}) is not this therapy's COI "
        f"({parse_coi(therapy.coi).eye_readable}); the step was blocked and an alert raised.",
        code="coi_mismatch",
        details={
            "field": field,
            "scanned": str(scanned),
            "scanned_coi": coi.value,
            "expected_coi": therapy.coi,
            "alert_id": alert_id,
        },
    )


def record_mismatch(therapy: Therapy, scanned: str, coi: Coi, actor: str, context: dict[str, Any]) -> str:
    """Commit the alert, the ``coi.mismatch`` event and its audit entry; return the alert's id."""
    db.session.rollback()  # nothing of the refused step may ride along with the refusal
    therapy = db.session.get_one(Therapy, therapy.id)  # therapies are never deleted
    owner = db.session.execute(select(Therapy.id).where(Therapy.coi == coi.value)).scalar_one_or_none()
    details = {
        "scanned": scanned,
        "scanned_coi": coi.value,
        "expected_coi": therapy.coi,
        "scanned_therapy_id": owner,
        **context,
    }
    with unit_of_work():
        alert = raise_alert(
            therapy,
            "coi_mismatch",
            f"Scanned label {coi.eye_readable} does not match COI "
            f"{parse_coi(therapy.coi).eye_readable}: the step was blocked.",
            actor,
            severity="high",
            activity_id=context.get("activity_id"),
            data=details,
        )
        audit.append(
            actor,
            "coi.mismatch",
            "therapy",
            therapy.id,
            data={**details, "alert_id": alert.id},
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            reason="scanned label does not match",
        )
        outbox.emit(
            "coi.mismatch",
            {"therapy_id": therapy.id, "coi": therapy.coi, "alert_id": alert.id, **details},
            therapy_id=therapy.id,
            site_id=therapy.site_id,
        )
        alert_id = alert.id
    return alert_id


def form_has_scan(schema: dict | None) -> bool:
    """Whether a task's JSON Schema form has a ``scanned_coi`` field."""
    return isinstance(schema, dict) and SCAN_FIELD in (schema.get("properties") or {})


def verify_task_scan(
    therapy: Therapy, schema: dict | None, activity_id: str, task_id: str, data: dict, actor: str
) -> Coi | None:
    """Verify the ``scanned_coi`` of a task's form data (when its form's JSON Schema ``schema`` has that field
    and it was given)."""
    if not form_has_scan(schema) or data.get(SCAN_FIELD) in (None, ""):
        return None
    return verify_scan(
        therapy, data[SCAN_FIELD], actor, context={"where": "task", "task_id": task_id, "activity_id": activity_id}
    )
