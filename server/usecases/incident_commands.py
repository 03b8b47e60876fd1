"""An administrator's answer to an incident (a failed service task out of retries): run it again, or resolve
it by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from server.access.auth import check_roles
from server.store.extensions import db
from server.store.models import Incident, User
from server.workflow import incidents, recovery

from .checks import audits_refusals

ADMINS = ("admin",)


@dataclass(frozen=True)
class RetryIncident:
    """``by`` runs the failed step of incident ``incident_id`` again now."""

    ROLES: ClassVar[tuple[str, ...]] = ADMINS

    incident_id: str
    by: User


@dataclass(frozen=True)
class ResolveIncident:
    """``by`` closes incident ``incident_id`` for ``reason``: the failed step counts as done by hand, with
    ``result`` as its result, and the therapy runs on."""

    ROLES: ClassVar[tuple[str, ...]] = ADMINS

    incident_id: str
    reason: str
    by: User
    result: Any = None


@audits_refusals
def retry_incident(command: RetryIncident) -> Incident:
    """Retry; a new failure keeps the incident open with the new error. 409 when it is resolved already."""
    check_roles(command.by, command.ROLES)
    incident = incidents.get_incident(command.incident_id)
    recovery.retry(incident, command.by.username)
    db.session.refresh(incident)
    return incident


@audits_refusals
def resolve_incident(command: ResolveIncident) -> Incident:
    """Resolve; 409 when it is resolved already."""
    check_roles(command.by, command.ROLES)
    incident = incidents.get_incident(command.incident_id)
    recovery.resolve(incident, command.reason, command.by.username, command.result)
    db.session.refresh(incident)
    return incident
