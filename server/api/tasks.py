"""User tasks: the inbox, one task, completion (with form validation and electronic signature)."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from server.access.auth import can_see_site, require, visible_site_ids
from server.api.idempotency import idempotent
from server.api.schemas import CompleteTaskSchema, load_json
from server.compliance.signatures import check_signer, signatures_for_task
from server.custody.scans import verify_task_scan
from server.store import audit
from server.store.extensions import db
from server.store.models import TaskRecord, Therapy
from server.workflow import therapies as usecases

from ..errors import Conflict, Forbidden, NotFound
from . import bp
from .paging import page
from .views import task_item, task_list_options, therapy_summary


def visible_task(task_id: str) -> TaskRecord:
    """The task (with its therapy, which every caller of this uses) if the caller may see it; 404 otherwise."""
    task = db.session.get(TaskRecord, task_id, options=(joinedload(TaskRecord.therapy, innerjoin=True),))
    if task is None or not can_see_site(g.user, task.site_id):
        raise NotFound("No such task.", details={"task_id": task_id})
    return task


@bp.get("/tasks")
@require()
def list_tasks():
    """READY tasks the caller may complete, soonest due first."""
    query = inbox_query(g.user, request.args.get("role", ""))
    if request.args.get("therapy_id"):
        query = query.where(TaskRecord.therapy_id == request.args["therapy_id"])
    return page(query, task_item)


def inbox_query(user, role: str = ""):
    """READY tasks of active therapies that ``user`` may complete (of their roles, or just ``role``, at their
    sites), soonest due first and undated last: the order of the inbox index. The API and the web inbox."""
    query = (
        select(TaskRecord)
        .join(Therapy)
        .where(TaskRecord.status == "ready", Therapy.status == "active")
        .options(*task_list_options())
        .where(TaskRecord.role.in_([r for r in user.roles if not role or r == role]))
        .order_by(TaskRecord.due_at.is_(None), TaskRecord.due_at, TaskRecord.created_at, TaskRecord.id)
    )
    sites = visible_site_ids(user)
    return query if sites is None else query.where(TaskRecord.site_id.in_(sites))


@bp.get("/tasks/<task_id>")
@require()
def get_task(task_id: str):
    """One task, ready or done, with its recorded data and signatures once completed."""
    return task_detail(visible_task(task_id))


def _refuse(task: TaskRecord, status: int, code: str, message: str) -> None:
    """Audit a refused attempt on GMP data (in its own transaction) before the error is returned."""
    audit.audit_refusal(
        g.user.username,
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


def task_detail(task: TaskRecord) -> dict:
    """One task with its electronic signatures (printed name, time, meaning, still valid or not)."""
    return {
        **task_item(task),
        "data": task.data if task.status == "completed" else None,
        "signatures": signatures_for_task(task),
    }


@bp.post("/tasks/<task_id>/complete")
@require()
@idempotent
def complete_task(task_id: str):
    """Complete a READY task with form data (and a signature when the diagram asks for one)."""
    task = visible_task(task_id)
    body = load_json(CompleteTaskSchema())
    user = g.user
    if task.role not in user.roles:
        message = f"Only the role '{task.role}' may complete this task."
        _refuse(task, 403, "forbidden", message)
        raise Forbidden(message, details={"role": task.role})
    if task.status != "ready":
        message = "This task is no longer ready; someone may have completed it, or it was cancelled."
        _refuse(task, 409, "task_not_ready", message)
        raise Conflict(message, code="task_not_ready", details={"task_id": task.id, "status": task.status})
    usecases.validate_form_data(task.therapy, task.form, body["data"])
    # The label is checked before anyone signs: a wrong bag is refused and alerted whatever the password.
    verify_task_scan(task.therapy, task.form, task.activity_id, task.id, body["data"], user.username)
    signer = None
    if task.signature:
        check_signer(user, task, body["signature"])
        signer = user
    therapy = usecases.complete_task(task, body["data"], user.username, signer=signer)
    db.session.refresh(task)
    return {"task": task_detail(task), "therapy": therapy_summary(therapy)}, 200
