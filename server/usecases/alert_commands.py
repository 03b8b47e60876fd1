"""Acknowledging an alert: someone says, with a note, what was done about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from server.access.auth import check_roles
from server.errors import Conflict
from server.oversight import alerts
from server.store.extensions import db
from server.store.models import ROLES, Alert, User
from server.store.uow import unit_of_work

from .checks import audits_refusals, visible_alert


@dataclass(frozen=True)
class AcknowledgeAlert:
    """``by`` acknowledges the open alert ``alert_id`` with ``note``."""

    # Everyone who works on therapies may acknowledge what they see; the auditor only reads.
    ROLES: ClassVar[tuple[str, ...]] = tuple(r for r in ROLES if r != "auditor")

    alert_id: str
    by: User
    note: str = ""


@audits_refusals
def acknowledge_alert(command: AcknowledgeAlert) -> Alert:
    """Acknowledge the alert (audited); 409 ``already_acknowledged`` when someone did first."""
    check_roles(command.by, command.ROLES)
    alert = visible_alert(command.by, command.alert_id)
    with unit_of_work():
        db.session.refresh(alert)
        if alert.status != "open":
            raise Conflict(
                f"The alert was already acknowledged by {alert.acknowledged_by}.",
                code="already_acknowledged",
                details={"alert_id": alert.id},
            )
        alerts.acknowledge(alert, command.by.username, command.note)
    return alert
