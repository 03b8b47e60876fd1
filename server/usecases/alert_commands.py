"""Acknowledging alerts: someone says what was done about one alert, or about several at once with one note.

The rule for the note is here, for the API and the pages alike: a high or critical alert is acknowledged with a
note saying what was done (422 ``note_required`` without one); a low or medium one may be acknowledged without.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import select

from server.access.auth import check_roles
from server.errors import Conflict, Invalid, NotFound
from server.oversight import alerts
from server.store.extensions import db
from server.store.models import ROLES, Alert, User, utcnow
from server.store.uow import unit_of_work

from .checks import audits_refusals

# Everyone who works on therapies may acknowledge what they see; the auditor only reads.
ACKNOWLEDGERS = tuple(r for r in ROLES if r != "auditor")
NOTE_LONGEST = 2000
MOST_AT_ONCE = 500  # one page of alerts at most


@dataclass(frozen=True)
class AcknowledgeAlert:
    """``by`` acknowledges the open alert ``alert_id`` with ``note`` (required for high and critical alerts)."""

    ROLES: ClassVar[tuple[str, ...]] = ACKNOWLEDGERS

    alert_id: str
    by: User
    note: str = ""


@dataclass(frozen=True)
class AcknowledgeAlerts:
    """``by`` acknowledges the open alerts ``alert_ids`` together with one ``note`` (required when any of them
    is high or critical): all of them or none."""

    ROLES: ClassVar[tuple[str, ...]] = ACKNOWLEDGERS

    alert_ids: Sequence[str]
    by: User
    note: str = ""


@audits_refusals
def acknowledge_alert(command: AcknowledgeAlert) -> Alert:
    """Acknowledge the alert (audited); 409 ``already_acknowledged`` when someone did first; 422
    ``note_required`` for a high or critical alert without a note."""
    [alert] = _acknowledge(command.by, [command.alert_id], command.note)
    return alert


@audits_refusals
def acknowledge_alerts(command: AcknowledgeAlerts) -> list[Alert]:
    """Acknowledge every alert named (each audited as one acknowledgement), in one transaction: 404 when any is
    not visible, 409 ``already_acknowledged`` naming those someone acknowledged first, 422 ``note_required``
    when any is high or critical and there is no note; nothing is acknowledged then."""
    ids = list(dict.fromkeys(command.alert_ids))
    if not ids or len(ids) > MOST_AT_ONCE:
        raise Invalid(
            f"Choose between 1 and {MOST_AT_ONCE} alerts to acknowledge.",
            code="invalid_request",
            details={"field": "alert_ids"},
        )
    return _acknowledge(command.by, ids, command.note)


def _acknowledge(by: User, ids: list[str], note: str) -> list[Alert]:
    check_roles(by, ACKNOWLEDGERS)
    note = note.strip()
    if len(note) > NOTE_LONGEST:
        raise Invalid(
            f"The note is longer than {NOTE_LONGEST} characters.", code="invalid_request", details={"field": "note"}
        )
    with unit_of_work():
        # The alerts the caller may see, read afresh and locked (PostgreSQL) until the commit.
        seen = alerts.AlertFilter(status=None).narrow(select(Alert).where(Alert.id.in_(ids)), by, utcnow())
        found = {
            a.id: a
            for a in db.session.execute(seen.with_for_update().execution_options(populate_existing=True)).scalars()
        }
        unseen = [i for i in ids if i not in found]
        if unseen:
            raise NotFound("No such alert.", details={"alert_id": unseen[0], "alert_ids": unseen})
        chosen = [found[i] for i in ids]
        done = [a for a in chosen if a.status != "open"]
        if done:
            who = sorted({a.acknowledged_by or "someone" for a in done})
            raise Conflict(
                f"{_count(done)} already acknowledged (by {', '.join(who)}); nothing was acknowledged."
                if len(ids) > 1
                else f"The alert was already acknowledged by {done[0].acknowledged_by}.",
                code="already_acknowledged",
                details={"alert_id": done[0].id, "alert_ids": [a.id for a in done]},
            )
        serious = [a for a in chosen if a.severity in alerts.NOTE_REQUIRED]
        if serious and not note:
            raise Invalid(
                "Write a note saying what was done: high and critical alerts are acknowledged with a note.",
                code="note_required",
                details={"field": "note", "alert_ids": [a.id for a in serious]},
            )
        for alert in chosen:
            alerts.acknowledge(alert, by.username, note)
    return chosen


def _count(done: list[Alert]) -> str:
    return "1 alert was" if len(done) == 1 else f"{len(done)} alerts were"
