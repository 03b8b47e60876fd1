"""A therapy's lifecycle beyond its diagram: held (a patient unwell, results awaited) and resumed; sent back to
scheduling.

While held nothing of the therapy moves: no task can be completed (409 ``on_hold``), no timer, escalation or
retry fires (the scheduler looks only at active therapies), and messages from outside are recorded and kept for
the resume. Resuming moves every armed timer, and every waiting retry, later by the time the therapy was held,
so each keeps the time it had left (a 24 h window held for 3 h after 1 h fires 23 h after the resume); then the
kept messages are delivered in the order they came.

Sending a therapy back to scheduling is a path of its diagram: the diagram catches the message
``therapy.reschedule`` (a boundary event on the tasks before which the dates may still move, in the bundled
autologous process the collection) and leads back to its scheduling task; the message carries the reschedule
reason code, with which the new slots move the therapy's bookings. A therapy whose diagram does not catch it
there and then cannot be sent back (409 ``not_reschedulable``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from server.clock import clock, iso
from server.errors import ApiError, Conflict
from server.integration import outbox
from server.store.extensions import db
from server.store.models import Incident, TaskRecord, Therapy
from server.store.uow import after_commit, unit_of_work
from server.workflow import incidents, therapies


def hold(therapy: Therapy, reason_code: str, reason: str | None, actor: str) -> Therapy:
    """Hold an active therapy (audited, ``therapy.held``); 409 ``already_held`` or ``not_active``."""
    if therapy.status == "on_hold":
        raise Conflict(f"The therapy has been held since {iso(therapy.held_at)}.", code="already_held")
    if therapy.status != "active":
        raise Conflict(f"The therapy is {therapy.status}; only an active therapy is held.", code="not_active")
    now = clock()()
    with unit_of_work():
        therapy.status, therapy.held_at, therapy.hold_reason_code = "on_hold", now, reason_code
        therapy.held_messages, therapy.next_due_at, therapy.updated_at = [], None, now
        therapy.stage = f"On hold ({reason_code})"
        outbox.record_event("therapy.held", therapy, {"reason_code": reason_code}, actor, reason=reason)
    return therapy


def resume(therapy: Therapy, reason: str | None, actor: str) -> Therapy:
    """Resume a held therapy: its clocks go on with the time they had left, then the messages kept while it
    was held are delivered in order (one that is no longer awaited is refused and audited, as at any time).
    409 ``not_held`` for a therapy that is not on hold."""
    if therapy.status != "on_hold" or therapy.held_at is None:
        raise Conflict(f"The therapy is {therapy.status}, not on hold.", code="not_held")
    now = clock()()
    held_for = now - therapy.held_at
    kept = list(therapy.held_messages or [])
    with unit_of_work():
        outcome = therapies.runtime_for(therapy, actor).shift_timers(therapy.state, held_for.total_seconds())
        retries = _shift_retries(therapy, held_for)
        _shift_task_deadlines(therapy, held_for)
        therapy.state, therapy.data = outcome.state, outcome.data
        therapy.waits = [w.to_dict() for w in outcome.waiting_for]
        due = min((d for d in (outcome.next_due, *retries) if d is not None), default=None)
        if incidents.halting(therapy):
            due = None
        therapy.status, therapy.next_due_at, therapy.updated_at = "active", due, now
        therapy.stage = therapies.stage_of(outcome, therapy)
        therapy.held_at, therapy.hold_reason_code, therapy.held_messages = None, None, None
        data = {"held_seconds": int(held_for.total_seconds()), "messages_kept": len(kept)}
        outbox.record_event("therapy.resumed", therapy, data, actor, reason=reason)
        therapy_id = therapy.id
        after_commit(lambda: therapies.notify_scheduler(therapy_id, due))
    for message in kept:
        try:
            therapies.deliver_message(therapy, message["name"], message["payload"], message["actor"])
        except ApiError as refused:  # no longer awaited, or (moved to a new version) no longer fitting its
            if refused.status not in (409, 422):  # schema: refused and audited by deliver_message; the rest go in
                raise
            db.session.rollback()
            therapy = db.session.get_one(Therapy, therapy_id)
    return therapy


RESCHEDULE_MESSAGE = "therapy.reschedule"


def can_reschedule(therapy: Therapy) -> bool:
    """Whether the therapy can be sent back to scheduling now (active, and its diagram catches the message)."""
    return therapy.status == "active" and any(
        w.get("type") == "message" and w.get("name") == RESCHEDULE_MESSAGE for w in therapy.waits or []
    )


def reschedule(therapy: Therapy, reason_code: str, reason: str | None, actor: str) -> Therapy:
    """Send the therapy back to scheduling (audited, ``therapy.rescheduled``): the diagram takes the message
    ``therapy.reschedule`` with the reason code, withdraws the tasks it interrupts and opens its scheduling
    task again. 409 ``on_hold`` (resume it first), ``not_active``, or ``not_reschedulable`` where the diagram
    does not allow it at the therapy's current step."""
    if therapy.status == "on_hold":
        raise Conflict("The therapy is on hold: resume it before sending it back to scheduling.", code="on_hold")
    if therapy.status != "active":
        raise Conflict(f"The therapy is {therapy.status}; it is not scheduled again.", code="not_active")
    if not can_reschedule(therapy):
        raise Conflict(
            f"The therapy cannot be sent back to scheduling at its current step ({therapy.stage}): its diagram "
            f"allows it only where it catches the message '{RESCHEDULE_MESSAGE}' (in the bundled autologous "
            "process: until the cells are collected). Move a booking instead (POST .../bookings).",
            code="not_reschedulable",
            details={"stage": therapy.stage},
        )
    payload = {"reason_code": reason_code, "reason": reason, "requested_by": actor}
    with unit_of_work():
        therapies.deliver_message(therapy, RESCHEDULE_MESSAGE, payload, actor)
        outbox.record_event("therapy.rescheduled", therapy, {"reason_code": reason_code}, actor, reason=reason)
    return therapy


def _shift_task_deadlines(therapy: Therapy, held_for: timedelta) -> None:
    """Move the deadlines of the therapy's open tasks that were still ahead when it was held later by
    ``held_for``, as their timers move; a deadline missed before the hold stays (the task is late since then)."""
    open_tasks = db.session.execute(
        select(TaskRecord).where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "ready")
    ).scalars()
    for task in open_tasks:
        if task.due_at is not None and therapy.held_at is not None and task.due_at > therapy.held_at:
            task.due_at = task.due_at + held_for


def _shift_retries(therapy: Therapy, held_for: timedelta) -> list:
    """Move the therapy's waiting retries later by ``held_for``; their new times."""
    waiting = db.session.execute(
        select(Incident).where(
            Incident.therapy_id == therapy.id, Incident.status == "retrying", Incident.next_retry_at.is_not(None)
        )
    ).scalars()
    moved = []
    for incident in waiting:
        if incident.next_retry_at is not None:
            incident.next_retry_at = later = incident.next_retry_at + held_for
            moved.append(later)
    return moved
