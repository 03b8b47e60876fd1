"""Commands: what a person or a system asks Tether to do, as frozen dataclasses, each with one handler.

A handler holds every check of its use case (who may, whether it still can, what the data must be), audits
a refusal on GMP data before the error is answered, and runs the change in one transaction. The API, the
pages, the command line and the scheduler build commands and call handlers; they hold no rule themselves.
(``CompleteTask`` and ``DeliverMessage`` so far; the other use cases still take their arguments directly.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from engine.coi import CoiError, parse_coi
from server.access.auth import can_see_site
from server.compliance.signatures import check_signer
from server.custody.scans import verify_task_scan
from server.errors import Conflict, Forbidden, Invalid, NotFound
from server.store import audit
from server.store.extensions import db
from server.store.models import TaskRecord, Therapy, User
from server.workflow import therapies


@dataclass(frozen=True)
class CompleteTask:
    """``by`` completes the READY user task ``task_id`` with form ``data`` (and ``signature``, its password and
    meaning, when the diagram asks for one)."""

    task_id: str
    by: User
    data: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeliverMessage:
    """``by`` delivers the message ``name`` with ``payload`` to the therapy named by ``therapy_id`` or by its
    ``coi`` (any of the COI's written forms), which must wait for a message of that name."""

    name: str
    by: User
    therapy_id: str | None = None
    coi: str | None = None
    payload: Any = None


def visible_therapy(user: User, therapy_id: str) -> Therapy:
    """The therapy if ``user`` may see it; 404 otherwise (another site's therapy does not exist for them)."""
    therapy = db.session.get(Therapy, therapy_id)
    if therapy is None or not can_see_site(user, therapy.site_id):
        raise NotFound("No such therapy.", details={"therapy_id": therapy_id})
    return therapy


def deliver_message(command: DeliverMessage) -> tuple[Therapy, str | None]:
    """Deliver the message; returns the therapy and the activity that took it.

    422 when the therapy is named both ways or the COI is malformed (a wrong check character included), 404
    when no therapy the sender may see has that id or COI, 409 ``not_waiting`` (audited, nothing else
    changed) when the therapy waits for no message of that name.
    """
    if command.therapy_id and command.coi:
        raise Invalid(
            "Name the therapy by one of 'therapy_id' or 'coi', not both.",
            code="invalid_request",
            details={"field": "therapy_id"},
        )
    if command.coi:
        try:
            coi = parse_coi(command.coi)
        except CoiError as exc:
            raise Invalid(str(exc), code=exc.code, details={"field": "coi"}) from None
        therapy_id = db.session.execute(select(Therapy.id).where(Therapy.coi == coi.value)).scalar_one_or_none()
        therapy = visible_therapy(command.by, therapy_id or "none")
    else:
        therapy = visible_therapy(command.by, command.therapy_id or "none")
    return therapies.deliver_message(therapy, command.name, command.payload, command.by.username)


def visible_task(user: User, task_id: str) -> TaskRecord:
    """The task (with its therapy) if ``user`` may see it; 404 otherwise, as for a task that does not exist."""
    task = db.session.get(TaskRecord, task_id, options=(joinedload(TaskRecord.therapy, innerjoin=True),))
    if task is None or not can_see_site(user, task.site_id):
        raise NotFound("No such task.", details={"task_id": task_id})
    return task


def complete_task(command: CompleteTask) -> TaskRecord:
    """Check and complete the task, run its therapy to the next wait state; returns the task row.

    The order of the checks is what a person sees: the role and the task's state (each refusal audited), the
    form data, then the scanned COI (a wrong bag is refused and alerted whatever the password), then the
    signature, and only then the step, in one transaction with the signature and the audit entries.
    """
    user = command.by
    task = visible_task(user, command.task_id)
    if task.role not in user.roles:
        message = f"Only the role '{task.role}' may complete this task."
        _refuse(user, task, 403, "forbidden", message)
        raise Forbidden(message, details={"role": task.role})
    if task.status != "ready":
        message = "This task is no longer ready; someone may have completed it, or it was cancelled."
        _refuse(user, task, 409, "task_not_ready", message)
        raise Conflict(message, code="task_not_ready", details={"task_id": task.id, "status": task.status})
    therapies.validate_form_data(task.therapy, task.form, command.data)
    verify_task_scan(task.therapy, task.form, task.activity_id, task.id, command.data, user.username)
    signer = None
    if task.signature:
        check_signer(user, task, command.signature)
        signer = user
    therapies.complete_task(task, command.data, user.username, signer=signer)
    db.session.refresh(task)
    return task


def _refuse(user: User, task: TaskRecord, status: int, code: str, message: str) -> None:
    """Audit a refused attempt on GMP data (in its own transaction) before the error is answered."""
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
