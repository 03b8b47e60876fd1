"""What the server does with each event of an engine step: the one table of a step's side effects.

``Runtime`` commands return domain events (``engine/events.py``, ``engine/outcome.py``); ``apply_outcome``
hands each to the effects that ``SIDE_EFFECTS`` lists for its class, in order, inside the step's
transaction. An event class not in the table is only recorded: an audit entry, and an outbox row when its
type is public (``integration/outbox.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from engine import events as ev
from engine.outcome import IncidentOpened
from server.compliance.record import collection_and_infusion
from server.integration import outbox
from server.oversight import escalations
from server.store.models import TaskRecord, Therapy
from server.workflow import incidents


@dataclass
class Step:
    """The step being stored: its therapy, who took it, when, and the therapy's ready task rows by id."""

    therapy: Therapy
    actor: str
    now: datetime
    completed_by: str | None
    ready_rows: dict[str, TaskRecord]


Effect = Callable[[Step, ev.DomainEvent, dict], None]


def record(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """Audit the event and, when its type is public, queue it for integrators."""
    outbox.record_event(event.type, step.therapy, payload, step.actor)


def record_start(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """Record the start with the sites that take part (the parties)."""
    record(step, event, {**payload, "parties": step.therapy.parties})


def complete_task_row(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """Mark the completed task's row: when, by whom, with what data."""
    row = step.ready_rows.get(payload["task_id"])
    if row is not None:
        row.status, row.completed_at, row.completed_by, row.data = (
            "completed",
            step.now,
            step.completed_by,
            payload["data"],
        )
        _vein_to_vein(step.therapy, row)


def _vein_to_vein(therapy: Therapy, row: TaskRecord) -> None:
    """Keep the therapy's collection time (the last collection's) and infusion time (the first recorded) as the
    record's vein-to-vein clock reads them from the completed tasks."""
    collected, _, infused = collection_and_infusion([row])
    if collected is not None:
        therapy.collected_at = collected
    if infused is not None and therapy.infused_at is None:
        therapy.infused_at = infused


def cancel_task_row(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """Mark the withdrawn task's row (a boundary event or a cancellation took it away)."""
    row = step.ready_rows.get(payload["task_id"])
    if row is not None:
        row.status, row.completed_at = "cancelled", step.now


def raise_escalation(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """An alert for the role that holds the late task."""
    escalations.raise_escalation(step.therapy, payload, step.actor)


def record_failure(step: Step, event: ev.DomainEvent, payload: dict) -> None:
    """A failed service task: its incident retries it with backoff, or opens (audited there)."""
    incidents.record_failure(step.therapy, payload, step.actor, step.now)


SIDE_EFFECTS: dict[type[ev.DomainEvent], tuple[Effect, ...]] = {
    ev.ProcessStarted: (record_start,),
    ev.TaskCompleted: (complete_task_row, record),
    ev.TaskCancelled: (cancel_task_row, record),
    ev.TaskEscalated: (record, raise_escalation),
    IncidentOpened: (record_failure,),
}
ONLY_RECORDED: tuple[Effect, ...] = (record,)


def apply_events(step: Step, events: list[ev.DomainEvent]) -> None:
    """Run each event's side effects, in the order the events happened."""
    for event in events:
        payload = event.payload()
        for effect in SIDE_EFFECTS.get(type(event), ONLY_RECORDED):
            effect(step, event, payload)
