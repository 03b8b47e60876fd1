"""Writing domain events to the outbox, in the transaction of the change that caused them.

Each event is staged in the transaction (``STAGED``) for the unit of work's commit step that fans it out to
the webhook subscriptions (``server.integration.webhooks.fan_out_staged``).
"""

from __future__ import annotations

from typing import Any

from server.store import audit
from server.store.extensions import db
from server.store.models import OutboxEvent, Therapy
from server.store.uow import staged

STAGED = "outbox"  # the transaction's events waiting to be fanned out (``uow.staged``)

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
        "task.ready",
        "task.completed",
        "task.escalated",
        "timer.fired",
        "message.received",
        "custody.transferred",
        "coi.mismatch",
        "condition.excursion",
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
