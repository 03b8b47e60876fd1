"""Completing a user task: every check a person meets, in the order they meet them, then the step."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, inspect, select
from sqlalchemy.orm import joinedload

from server.clock import iso
from server.compliance.signatures import check_signer
from server.custody.scans import verify_task_scan
from server.errors import Conflict, Forbidden, NotFound
from server.store import audit
from server.store.extensions import db
from server.store.models import TaskRecord, Therapy, User
from server.workflow import definitions, incidents, therapies

from .checks import audits_refusals, sees_task


@dataclass(frozen=True)
class CompleteTask:
    """``by`` completes the READY user task ``task_id`` with form ``data`` (and ``signature``, its password and
    meaning, when the diagram asks for one)."""

    task_id: str
    by: User
    data: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None


class Completed(NamedTuple):
    """What a completion did (an answer, not a command): the task's row, completed, and the rows of the tasks its
    step made ready that the person who completed it may see (at their sites; of any role), in the order the
    engine made them ready."""

    task: TaskRecord
    next_tasks: list[TaskRecord]


@audits_refusals
def complete_task(command: CompleteTask) -> Completed:
    """Check and complete the task, run its therapy to the next wait state; returns the task row and the tasks
    that became ready.

    The order of the checks is what a person sees: the task must be one they may see (404), their role and
    the task's state (each refusal audited as ``task.refused``), the form data, then the scanned COI (a wrong
    bag is refused and alerted whatever the password), then the signature, and only then the step, in one
    transaction with the signature and the audit entries.
    """
    user = command.by
    task = task_to_complete(user, command.task_id)
    if task.role not in user.roles:
        message = f"Only the role '{task.role}' may complete this task."
        _refuse(user, task, 403, "forbidden", message)
        raise Forbidden(message, details={"role": task.role})
    if task.status != "ready":
        message = "This task is no longer ready; someone may have completed it, or it was cancelled."
        _refuse(user, task, 409, "task_not_ready", message)
        raise Conflict(message, code="task_not_ready", details={"task_id": task.id, "status": task.status})
    if task.therapy.status == "on_hold":
        message = "The therapy is on hold; its tasks wait until the treatment centre resumes it."
        _refuse(user, task, 409, "on_hold", message)
        raise Conflict(message, code="on_hold", details={"held_since": iso(task.therapy.held_at)})
    if task.site_id is None:
        message = (
            f"This task is the {task.party} party's, and the therapy has no {task.party} site yet; "
            f"the treatment centre names one (POST /api/v1/therapies/{task.therapy_id}/parties)."
        )
        _refuse(user, task, 409, "party_unassigned", message)
        raise Conflict(message, code="party_unassigned", details={"party": task.party})
    therapies.validate_form_data(task.therapy, task.form, command.data)
    schema = definitions.definition_forms(task.therapy.definition_id).get(task.form) if task.form else None
    verify_task_scan(task.therapy, schema, task.activity_id, task.id, command.data, user.username)
    signer = None
    if task.signature:
        check_signer(user, task, command.signature, command.data)
        signer = user
    made_ready = therapies.complete_task(task, command.data, user.username, signer=signer)
    return Completed(task, [row for row in made_ready if sees_task(user, row)])


def task_to_complete(user: User, task_id: str) -> TaskRecord:
    """The task as ``visible_task`` gives it (404 unless ``user`` may see it), with what a completion reads in the
    same query (its therapy, the sites of its parties, its ready task rows, whether it has open incidents), by a
    statement built once per process; a task the session holds already with its therapy (the route read it to
    refuse an unseen task before reading the body) is not read again."""
    session = db.session()
    task = session.identity_map.get(session.identity_key(TaskRecord, task_id))
    if task is None or "therapy" in inspect(task).unloaded:
        task = session.execute(_completion_query(), {"task_id": task_id}).unique().scalar_one_or_none()
    if task is None or not sees_task(user, task):
        raise NotFound("No such task.", details={"task_id": task_id})
    return task


@functools.cache
def _completion_query() -> Select:
    """The task with its therapy, the sites of its parties, its ready task rows and whether it has open incidents
    (``visible_task``'s load), built once: the statement keeps its compiled form."""
    therapy = joinedload(TaskRecord.therapy, innerjoin=True)
    return (
        select(TaskRecord)
        .where(TaskRecord.id == bindparam("task_id"))
        .options(
            therapy.joinedload(Therapy.party_rows),
            therapy.joinedload(Therapy.ready_task_rows),
            therapy.with_expression(Therapy.has_open_incidents, incidents.any_unresolved(Therapy.id)),
        )
    )


def prefill_path(ui: Any) -> str | None:
    """A field's ``ui:prefill`` (a dotted path into the therapy's process data), or None."""
    path = ui.get("ui:prefill") if isinstance(ui, dict) else None
    return path if isinstance(path, str) and path.strip() else None


def process_value(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``mes_started.batch``, ``qc.tests.0.result``) of process data; None when
    there is none."""
    value = data
    for part in path.strip().split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def prefilled(task: TaskRecord, schema: dict, ui_schema: dict) -> dict[str, Any]:
    """What the system already knows for the ready task's form: each top-level field whose ui schema names
    ``ui:prefill`` and whose path holds a value of the therapy's process data (none once the task is done)."""
    if task.status != "ready" or not isinstance(ui_schema, dict):
        return {}
    out: dict[str, Any] = {}
    for key in (schema.get("properties") or {}) if isinstance(schema, dict) else ():
        path = prefill_path(ui_schema.get(key))
        if path is None:
            continue
        value = process_value(task.therapy.data or {}, path)
        if value is not None and not isinstance(value, dict | list):
            out[key] = value
    return out


def _refuse(user: User, task: TaskRecord, status: int, code: str, message: str) -> None:
    """Audit a refused attempt on the task (in its own transaction) before the error is answered."""
    audit.audit_refusal(
        user.username,
        "task.refused",
        "task",
        task.id,
        status=status,
        code=code,
        message=message,
        therapy_id=task.therapy_id,
        site_id=task.site_id,
        data={"reason": code, "activity_id": task.activity_id},
    )
