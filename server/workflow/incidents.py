"""Incidents: a service task that failed, retried with exponential backoff, then left for an admin; and a step
the engine could not take at all (it ran past its budget, or a script failed while timers fired), which halts
the therapy's timers until an admin retries or resolves it.

The engine stops a therapy at a failing service task (the task stays in ERROR in the saved state) and keeps
everything before it. Each failure is audited (``service.failed``, with the operator's own message). The
incident retries by itself as the diagram's ``spiffworkflow:retry`` says (``retries``, default 3; the k-th
retry waits ``backoff_base ** k`` seconds, base 5 by default): the retry time is armed like a timer, through
the therapy's ``next_due_at``. When the retries run out it opens (``incident.opened``, and an alert); an
admin then retries it (the task runs again) or resolves it with a reason (the step counts as done by hand,
``incident.resolved``). The first error message stays on the incident; every attempt's is in its details.

A halting incident has no task: the step was undone (``step.undone`` audits each attempt), the incident opens
at once, and no timer of the therapy fires while it is unresolved. A retry runs the therapy's due work again;
resolving it with a reason lets the timers run on. An admin's retry and resolution are in
``server.workflow.recovery``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import InstrumentedAttribute

from engine.errors import EngineError, StepBudgetExceeded
from engine.runtime import DEFAULT_RETRIES, Outcome
from server.clock import iso
from server.errors import Conflict, NotFound
from server.integration import outbox
from server.oversight.alerts import raise_alert
from server.store import audit
from server.store.extensions import db
from server.store.models import Incident, Therapy

DEFAULT_BACKOFF_BASE = 5
UNRESOLVED = ("retrying", "open")
STATUSES = ("retrying", "open", "resolved")
# What a halting incident keeps of a StepBudgetExceeded's details (the refusals of its therapy's commands repeat them).
BUDGET_DETAILS = ("steps", "cpu_seconds", "seconds")


def audit_incident(incident: Incident, therapy: Therapy, actor: str, action: str, **data) -> None:
    """Audit one thing that happened to ``incident`` (its id and activity go with ``data``)."""
    audit.append(
        actor,
        action,
        "incident",
        incident.id,
        therapy_id=therapy.id,
        site_id=therapy.site_id,
        data={"incident_id": incident.id, "activity_id": incident.activity_id, **data},
    )


def _add_attempt(incident: Incident, attempt: dict) -> None:
    """Count one more failed attempt of an open incident, keeping its history."""
    incident.attempts += 1
    incident.details = {**incident.details, "history": [*incident.details.get("history", []), attempt]}


def backoff(base: int | None, attempt: int) -> timedelta:
    """How long the ``attempt``-th retry waits: ``base ** attempt`` seconds (at least one second)."""
    base = base if base and base > 0 else DEFAULT_BACKOFF_BASE
    return timedelta(seconds=max(1, base**attempt))


def any_unresolved(therapy_id: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """Whether the therapy ``therapy_id`` (a column of a query) has incidents that wait, as SQL."""
    return exists().where(Incident.therapy_id == therapy_id, Incident.status.in_(UNRESOLVED))


def unresolved(therapy: Therapy) -> list[Incident]:
    """The therapy's incidents that still wait for a retry or for a person, oldest first."""
    return list(
        db.session.execute(
            select(Incident)
            .where(Incident.therapy_id == therapy.id, Incident.status.in_(UNRESOLVED))
            .order_by(Incident.opened_at)
        ).scalars()
    )


def record_failure(therapy: Therapy, failure: dict, actor: str, now: datetime) -> Incident:
    """Record one failed attempt (an ``incident.opened`` engine event's payload) and plan what comes next."""
    incident = next((i for i in unresolved(therapy) if i.task_id == failure["task_id"]), None)
    attempt = {"at": iso(now), "error_type": failure["error_type"], "message": failure["message"], "by": actor}
    retries = failure.get("retries")
    retries = DEFAULT_RETRIES if retries is None else max(0, int(retries))
    if incident is None:
        incident = Incident(
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            activity_id=failure["activity_id"],
            task_id=failure["task_id"],
            error_type=failure["error_type"],
            message=failure["message"],
            attempts=1,
            status="retrying",
            opened_at=now,
            details={
                "name": failure["name"],
                "operator": failure.get("operator"),
                "retries": retries,
                "backoff_base": failure.get("retry_backoff_base") or DEFAULT_BACKOFF_BASE,
                "history": [attempt],
            },
        )
        db.session.add(incident)
        db.session.flush()
    else:
        _add_attempt(incident, attempt)
    audit_incident(
        incident,
        therapy,
        actor,
        "service.failed",
        name=failure["name"],
        operator=failure.get("operator"),
        attempt=incident.attempts,
        error_type=failure["error_type"],
        message=failure["message"],
    )
    if incident.status == "retrying" and incident.attempts <= retries:
        incident.next_retry_at = now + backoff(incident.details.get("backoff_base"), incident.attempts)
    else:
        incident.next_retry_at = None
        if incident.status != "open":
            incident.status = "open"
            _publish("incident.opened", incident, therapy, actor)
            raise_alert(
                therapy,
                "incident",
                f"'{failure['name']}' failed after {incident.attempts} attempt(s): {incident.message}",
                actor,
                severity="high",
                role="admin",
                activity_id=incident.activity_id,
                data={"incident_id": incident.id},
            )
    return incident


def halt(therapy: Therapy, exc: EngineError, actor: str, now: datetime, *, command: str) -> Incident:
    """Record a step the engine could not take (already undone): open the therapy's halting incident, or add
    an attempt to the one that is open, and hold its timers. Call inside the transaction."""
    incident = next((i for i in unresolved(therapy) if i.task_id is None), None)
    attempt = {
        "at": iso(now),
        "error_type": type(exc).__name__,
        "message": exc.message,
        "by": actor,
        "command": command,
        **exc.as_details(),
    }
    name = _activity_name(therapy, exc.element_id)
    if incident is None:
        incident = Incident(
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            activity_id=exc.element_id,
            task_id=None,
            error_type=type(exc).__name__,
            message=exc.message,
            attempts=1,
            status="open",
            opened_at=now,
            details={
                "name": name,
                "kind": "halted",
                "command": command,
                "retries": 0,
                "history": [attempt],
                **{k: v for k, v in exc.details.items() if k in BUDGET_DETAILS},
            },
        )
        db.session.add(incident)
        db.session.flush()
    else:
        _add_attempt(incident, attempt)
    audit_incident(
        incident,
        therapy,
        actor,
        "step.undone",
        activity_id=exc.element_id,
        command=command,
        attempt=incident.attempts,
        error_type=type(exc).__name__,
        message=exc.message,
    )
    if incident.attempts == 1:
        what = "ran past its budget" if isinstance(exc, StepBudgetExceeded) else "failed"
        _publish("incident.opened", incident, therapy, actor)
        raise_alert(
            therapy,
            "incident",
            f"A step of the therapy {what} and was undone: {exc.message}",
            actor,
            severity="high",
            role="admin",
            activity_id=exc.element_id,
            data={"incident_id": incident.id},
        )
    therapy.next_due_at = None
    return incident


def halting(therapy: Therapy, open_incidents: list[Incident] | None = None) -> bool:
    """Whether an unresolved halting incident holds the therapy's timers (of ``open_incidents`` when the caller
    has just read them with ``unresolved``)."""
    found = unresolved(therapy) if open_incidents is None else open_incidents
    return any(i.task_id is None and i.status in UNRESOLVED for i in found)


def _activity_name(therapy: Therapy, activity_id: str | None) -> str | None:
    from server.workflow.definitions import engine_definition_by_id

    info = engine_definition_by_id(therapy.definition_id).info.activities.get(activity_id or "")
    return (info.name if info else None) or activity_id


def settle(
    therapy: Therapy, outcome: Outcome, actor: str, now: datetime, open_incidents: list[Incident] | None = None
) -> datetime | None:
    """Close the incidents whose task is no longer failed (it ran) or whose therapy ended; return when the
    next automatic retry is due. ``open_incidents``: the therapy's ``unresolved`` incidents, when just read."""
    failed = {t.task_id for t in outcome.failed_tasks}
    ended = therapy.status != "active"
    retries = []
    for incident in unresolved(therapy) if open_incidents is None else open_incidents:
        if incident.task_id is None and not ended:  # halting: closed by an admin's retry or resolution
            continue
        if incident.task_id in failed and not ended:
            if incident.status == "retrying" and incident.next_retry_at:
                retries.append(incident.next_retry_at)
            continue
        close(incident, therapy, actor, now, "therapy_ended" if ended else "retried", None)
    return min(retries) if retries else None


def due_retry(therapy: Therapy, now: datetime) -> Incident | None:
    """The incident of ``therapy`` whose automatic retry is due, if any."""
    due = [
        (i.next_retry_at, i)
        for i in unresolved(therapy)
        if i.status == "retrying" and i.next_retry_at is not None and i.next_retry_at <= now
    ]
    return min(due, key=lambda pair: pair[0])[1] if due else None


def incident_item(incident: Incident) -> dict:
    """An incident as the API shows it."""
    details = incident.details or {}
    history = details.get("history") or []
    return {
        "id": incident.id,
        "therapy_id": incident.therapy_id,
        "activity_id": incident.activity_id,
        "name": details.get("name"),
        "operator": details.get("operator"),
        "task_id": incident.task_id,
        "status": incident.status,
        "error_type": incident.error_type,
        "message": incident.message,
        "last_error": history[-1]["message"] if history else incident.message,
        "attempts": incident.attempts,
        "retries": details.get("retries"),
        "history": history,
        "opened_at": iso(incident.opened_at),
        "next_retry_at": iso(incident.next_retry_at),
        "resolved_at": iso(incident.resolved_at),
        "resolved_by": incident.resolved_by,
        "resolution": incident.resolution,
        "reason": incident.resolution_reason,
    }


def get_incident(incident_id: str) -> Incident:
    """An incident or 404."""
    incident = db.session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("No such incident.", details={"incident_id": incident_id})
    return incident


def close(incident: Incident, therapy: Therapy, actor: str, now: datetime, resolution: str, reason: str | None) -> None:
    """Mark resolved; publish ``incident.resolved`` when people were told of it (or one resolves it with a
    reason), else only audit it."""
    was_open = incident.status == "open"
    incident.status, incident.resolution, incident.resolution_reason = "resolved", resolution, reason
    incident.resolved_at, incident.resolved_by, incident.next_retry_at = now, actor, None
    if was_open or reason is not None:
        _publish("incident.resolved", incident, therapy, actor, reason=reason)
    else:  # closed before anyone was told: an automatic retry worked, or the therapy ended meanwhile
        action = "service.recovered" if resolution == "retried" else "incident.closed"
        audit_incident(incident, therapy, actor, action, attempts=incident.attempts, resolution=resolution)


def _publish(event_type: str, incident: Incident, therapy: Therapy, actor: str, reason: str | None = None) -> None:
    """Audit an incident event and queue it for integrators, in the current transaction."""
    details = incident.details or {}
    data = {
        "incident_id": incident.id,
        "activity_id": incident.activity_id,
        "name": details.get("name"),
        "operator": details.get("operator"),
        "error_type": incident.error_type,
        "message": incident.message,
        "attempts": incident.attempts,
        "status": incident.status,
        "resolution": incident.resolution,
    }
    audit.append(
        actor,
        event_type,
        "incident",
        incident.id,
        data=data,
        therapy_id=therapy.id,
        site_id=therapy.site_id,
        reason=reason,
    )
    outbox.emit(
        event_type,
        {"therapy_id": therapy.id, "coi": therapy.coi, **data, "reason": reason},
        therapy_id=therapy.id,
        site_id=therapy.site_id,
    )


def claim(incident: Incident) -> Therapy:
    """The incident's therapy, locked for this transaction (on PostgreSQL) so no timer steps it meanwhile."""
    query = select(Therapy).where(Therapy.id == incident.therapy_id)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(of=Therapy)
    therapy = db.session.execute(query).scalar_one()
    db.session.refresh(incident)
    still_unresolved(incident)
    return therapy


def still_unresolved(incident: Incident) -> None:
    """409 ``incident_resolved`` unless the incident still waits for a retry or a person."""
    if incident.status not in UNRESOLVED:
        raise Conflict(
            "The incident is already resolved.",
            code="incident_resolved",
            details={"incident_id": incident.id, "resolution": incident.resolution},
        )
