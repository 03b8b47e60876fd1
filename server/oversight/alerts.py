"""Raising and acknowledging alerts: every alert is audited and published as ``alert.raised``."""

from __future__ import annotations

from typing import Any

from server.integration import outbox
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, Therapy, utcnow

SEVERITIES = ("low", "medium", "high", "critical")


def raise_alert(
    therapy: Therapy | None,
    kind: str,
    message: str,
    actor: str,
    *,
    severity: str = "medium",
    role: str | None = None,
    activity_id: str | None = None,
    data: dict[str, Any] | None = None,
    site_id: int | None = None,
) -> Alert:
    """Record an open alert inside the current transaction (audit entry and ``alert.raised`` event), for the
    people of ``site_id`` (default: the therapy's treatment centre)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    alert = Alert(
        therapy_id=therapy.id if therapy else None,
        site_id=site_id if site_id is not None or therapy is None else therapy.site_id,
        kind=kind,
        severity=severity,
        message=message,
        role=role,
        activity_id=activity_id,
        data=data or {},
        status="open",
        raised_at=utcnow(),
    )
    db.session.add(alert)
    db.session.flush()
    payload = {
        "alert_id": alert.id,
        "kind": kind,
        "severity": severity,
        "message": message,
        "role": role,
        "activity_id": activity_id,
        **(data or {}),
    }
    audit.append(
        actor, "alert.raised", "alert", alert.id, data=payload, therapy_id=alert.therapy_id, site_id=alert.site_id
    )
    outbox.emit(
        "alert.raised",
        {"therapy_id": alert.therapy_id, "coi": therapy.coi if therapy else None, **payload},
        therapy_id=alert.therapy_id,
        site_id=alert.site_id,
    )
    return alert


def acknowledge(alert: Alert, actor: str, note: str) -> Alert:
    """Mark an open alert acknowledged with a note (audited)."""
    alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", actor, utcnow()
    alert.acknowledgement_note = note
    audit.append(
        actor,
        "alert.acknowledged",
        "alert",
        alert.id,
        data={"note": note, "kind": alert.kind},
        therapy_id=alert.therapy_id,
        site_id=alert.site_id,
    )
    return alert


def alert_item(alert: Alert) -> dict:
    """An alert as the API shows it."""
    from server.clock import iso

    return {
        "id": alert.id,
        "therapy_id": alert.therapy_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "role": alert.role,
        "activity_id": alert.activity_id,
        "data": alert.data,
        "status": alert.status,
        "raised_at": iso(alert.raised_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": iso(alert.acknowledged_at),
        "note": alert.acknowledgement_note,
    }
