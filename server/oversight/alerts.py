"""Raising and acknowledging alerts: every alert is audited and published as ``alert.raised``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select

from server.access.auth import visible_site_ids
from server.integration import outbox
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, Therapy, User, utcnow

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("open", "acknowledged")
# An acknowledgement of a high or critical alert says what was done; low and medium ones may go without a note.
NOTE_REQUIRED = ("high", "critical")
# Roles that work for one party of a therapy: an alert for them goes to that party's site when the therapy has one.
ROLE_PARTIES = {"manufacturing": "manufacturing", "logistics": "logistics"}
# How old an alert may be asked to be at least: the age filter's choices.
OLDER_THAN = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


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


def addressed_to(user: User) -> ColumnElement[bool]:
    """The alerts meant for ``user``: those for one of their roles, or for no role in particular (everyone at
    the alert's site). The site is a matter of what they may see (``AlertFilter``'s query keeps to it)."""
    return or_(Alert.role.is_(None), Alert.role.in_(list(user.roles or [])))


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a list shows: a status (None: any), severity, kind, therapies, addressed to the viewer, and
    raised at least ``older_than`` ago (a key of ``OLDER_THAN``)."""

    status: str | None = "open"
    severity: str | None = None
    kind: str | None = None
    therapy_ids: Collection[str] | None = None
    for_me: bool = False
    older_than: str | None = None

    def query(self, user: User, now: datetime) -> Select:
        """The alerts ``user`` may see (their sites; an alert without a site: users of every site) that pass,
        newest first."""
        query = select(Alert).order_by(Alert.raised_at.desc(), Alert.id)
        return self.narrow(query, user, now)

    def narrow(self, query: Select, user: User, now: datetime) -> Select:
        """``query`` over ``Alert`` kept to what ``user`` may see and what this filter asks for."""
        sites = visible_site_ids(user)
        if sites is not None:
            query = query.where(Alert.site_id.in_(sites))
        if self.status is not None:
            query = query.where(Alert.status == self.status)
        if self.severity:
            query = query.where(Alert.severity == self.severity)
        if self.kind:
            query = query.where(Alert.kind == self.kind)
        if self.therapy_ids is not None:
            query = query.where(Alert.therapy_id.in_(list(self.therapy_ids)))
        if self.for_me:
            query = query.where(addressed_to(user))
        if self.older_than:
            query = query.where(Alert.raised_at <= now - OLDER_THAN[self.older_than])
        return query


def open_counts(user: User) -> dict[str, int]:
    """The open alerts meant for ``user`` by severity, in one grouped query (severities without any: absent)."""
    query = AlertFilter(status="open", for_me=True).narrow(
        select(Alert.severity, func.count()).group_by(Alert.severity), user, utcnow()
    )
    return {severity: count for severity, count in db.session.execute(query).all()}


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
