"""Writing domain events to the outbox, in the transaction of the change that caused them, and who may read them.

Each event is staged in the transaction (``STAGED``) for the unit of work's commit step that fans it out to
the webhook subscriptions (``server.integration.webhooks.fan_out_staged``). The outbox row keeps the whole
event; what a reader gets (a subscription's owner, a stream's user) is decided as it goes out: a therapy's
events reach the sites of all its parties (``Audience``), and the patient reference only those who may know
it (``Reader.view``). With a message broker configured (``TETHER_BROKER_URL``) each event is also marked
``pending`` for the broker's publisher (``server/broker/publisher.py``), which ``BROKER_BELL`` wakes once the
transaction has committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import select

from server.access.auth import knows_patient, withhold_patient
from server.store import audit
from server.store.extensions import db
from server.store.models import PATIENT_PARTIES, UNSCOPED_ROLES, OutboxEvent, Therapy, TherapyParty, User
from server.store.uow import after_commit, staged

STAGED = "outbox"  # the transaction's events waiting to be fanned out (``uow.staged``)
BROKER_BELL = threading.Event()  # set when events for the broker have committed

# The engine's event types that are part of the public contract (API.md) and so go to the outbox; the
# others (activity.completed, service.called, task.cancelled) stay in the audit trail. The `publish`
# operator writes its custom types to the outbox directly.
PUBLIC_TYPES = frozenset(
    {
        "definition.deployed",
        "therapy.started",
        "therapy.completed",
        "therapy.cancelled",
        "therapy.parties_changed",
        "therapy.held",
        "therapy.resumed",
        "therapy.rescheduled",
        "therapy.migrated",
        "booking.created",
        "booking.moved",
        "booking.cancelled",
        "task.ready",
        "task.completed",
        "task.escalated",
        "timer.fired",
        "message.received",
        "custody.transferred",
        "coi.mismatch",
        "condition.excursion",
        "shipment.created",
        "shipment.position",
        "shipment.eta_changed",
        "shipment.delivered",
        "shipment.lost",
        "alert.raised",
        "incident.opened",
        "incident.resolved",
    }
)


def emit(
    event_type: str,
    data: dict[str, Any],
    *,
    therapy_id: str | None = None,
    site_id: int | None = None,
    subject: str | None = None,
) -> OutboxEvent:
    """Queue one event for delivery once the transaction commits (staged for the fan-out)."""
    row = OutboxEvent(type=event_type, therapy_id=therapy_id or subject, site_id=site_id, data=data)
    if has_app_context() and current_app.config.get("BROKER_URL"):
        row.broker_state = "pending"  # published to the broker from here (server/broker/publisher.py)
        after_commit(BROKER_BELL.set)
    db.session.add(row)
    staged(STAGED).append(row)
    return row


def record_event(event_type: str, therapy: Therapy, data: dict, actor: str, reason: str | None = None) -> None:
    """Audit one event of ``therapy`` and, when it is public, queue it for integrators."""
    audit.append(
        actor,
        event_type,
        "therapy",
        therapy.id,
        data=data,
        therapy_id=therapy.id,
        site_id=therapy.site_id,
        reason=reason,
    )
    if event_type in PUBLIC_TYPES:
        emit(
            event_type,
            {"therapy_id": therapy.id, "coi": therapy.coi, **data},
            therapy_id=therapy.id,
            site_id=therapy.site_id,
        )


# -- who may read an event -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """Who may read one therapy's events: the sites of its parties, and among them those that meet the patient
    (whose users may know its ``patient_reference``)."""

    sites: frozenset[int]
    patient_sites: frozenset[int]
    patient_reference: str


def audiences(connection, therapy_ids: Iterable[str | None]) -> dict[str, Audience]:
    """The audience of each of ``therapy_ids`` that is a therapy (two queries, on a session or a connection).

    The treatment centre is a party row of its own; the apheresis party is the treatment centre unless a row
    names another site.
    """
    ids = sorted({therapy_id for therapy_id in therapy_ids if therapy_id})
    if not ids:
        return {}
    therapies = connection.execute(
        select(Therapy.id, Therapy.site_id, Therapy.patient_reference).where(Therapy.id.in_(ids))
    ).all()
    parties = select(TherapyParty.therapy_id, TherapyParty.party, TherapyParty.site_id)
    rows = connection.execute(parties.where(TherapyParty.therapy_id.in_(ids))).all()
    sites: dict[str, set[int]] = {therapy_id: {site_id} for therapy_id, site_id, _reference in therapies}
    meeting: dict[str, set[int]] = {therapy_id: {site_id} for therapy_id, site_id, _reference in therapies}
    for therapy_id, party, site_id in rows:
        sites[therapy_id].add(site_id)
        if party in PATIENT_PARTIES:
            meeting[therapy_id].add(site_id)
    return {
        therapy_id: Audience(frozenset(sites[therapy_id]), frozenset(meeting[therapy_id]), reference)
        for therapy_id, _site_id, reference in therapies
    }


@dataclass(frozen=True)
class Reader:
    """Someone events go out to: the sites they may see (None: every site), the sites they belong to and
    their roles (which decide whether they may know a patient)."""

    sees: frozenset[int] | None
    sites: frozenset[int]
    roles: tuple[str, ...]

    @classmethod
    def of(cls, roles: Iterable[str], site_ids: Iterable[int]) -> Reader:
        """The reader with ``roles`` at ``site_ids``: scoped to those sites unless a role sees every site or
        there are none (as ``User.scoped``)."""
        roles, sites = tuple(roles), frozenset(site_ids)
        scoped = bool(sites) and not any(role in UNSCOPED_ROLES for role in roles)
        return cls(sites if scoped else None, sites, roles)

    @classmethod
    def user(cls, user: User) -> Reader:
        """``user`` as a reader."""
        return cls.of(user.roles, (site.id for site in user.sites))

    def sees_event(self, therapy_id: str | None, site_id: int | None, audience: Audience | None) -> bool:
        """Whether an event of ``therapy_id`` (its audience, when it is a therapy) at ``site_id`` is theirs: a
        therapy's when one of their sites is one of its parties, another's when it has no site or one of theirs."""
        if self.sees is None:
            return True
        if audience is not None:
            return not self.sees.isdisjoint(audience.sites)
        return site_id is None or site_id in self.sees

    def view(self, data: dict, audience: Audience | None) -> dict:
        """An event's ``data`` as they may read it: the patient reference withheld unless they may know it."""
        if audience is None or knows_patient(self.roles, self.sites, audience.patient_sites):
            return data
        return withhold_patient(data, audience.patient_reference)
