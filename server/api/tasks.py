"""User tasks: the inbox, one task, completion (with form validation and electronic signature)."""

from __future__ import annotations

import hashlib
import json

from flask import g, request
from sqlalchemy import select

from .. import audit
from .. import therapies as usecases
from ..auth import can_see_site, require, verify_password, visible_site_ids
from ..errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from ..extensions import db
from ..idempotency import idempotent
from ..models import TaskRecord, Therapy, utcnow
from ..schemas import CompleteTaskSchema, load_json
from ..uow import unit_of_work
from . import bp
from .paging import page
from .views import iso, task_item, therapy_summary

MAX_FAILED_SIGNATURES = 5


def visible_task(task_id: str) -> TaskRecord:
    """The task if the caller may see its therapy; 404 otherwise."""
    task = db.session.get(TaskRecord, task_id)
    if task is None or not can_see_site(g.user, task.site_id):
        raise NotFound("No such task.", details={"task_id": task_id})
    return task


@bp.get("/tasks")
@require()
def list_tasks():
    """READY tasks the caller may complete, soonest due first."""
    query = (select(TaskRecord).join(Therapy).where(TaskRecord.status == "ready", Therapy.status == "active")
             .order_by(TaskRecord.due_at.is_(None), TaskRecord.due_at, TaskRecord.created_at, TaskRecord.id))
    roles = [r for r in g.user.roles]
    if request.args.get("role"):
        roles = [r for r in roles if r == request.args["role"]]
    query = query.where(TaskRecord.role.in_(roles))
    if request.args.get("therapy_id"):
        query = query.where(TaskRecord.therapy_id == request.args["therapy_id"])
    sites = visible_site_ids(g.user)
    if sites is not None:
        query = query.where(TaskRecord.site_id.in_(sites))
    return page(query, task_item)


@bp.get("/tasks/<task_id>")
@require()
def get_task(task_id: str):
    """One task, ready or done."""
    return task_item(visible_task(task_id))


def _refuse(task: TaskRecord, status_code: str, message: str) -> None:
    """Audit a refused attempt on GMP data (in its own transaction) before the error is returned."""
    with unit_of_work():
        audit.append(g.user.username, "task.refused", "task", task.id, therapy_id=task.therapy_id,
                     site_id=task.site_id, data={"reason": status_code, "message": message,
                                                 "activity_id": task.activity_id})


def signed_content_hash(task: TaskRecord, data: dict, meaning: str, signer: str) -> str:
    """SHA-256 over exactly what is signed: the task's identity, its data, the meaning and the signer."""
    content = {"task_id": task.id, "therapy_id": task.therapy_id, "coi": task.therapy.coi,
               "activity_id": task.activity_id, "data": data, "meaning": meaning, "signer": signer}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@bp.post("/tasks/<task_id>/complete")
@require()
@idempotent
def complete_task(task_id: str):
    """Complete a READY task with form data (and a signature when the diagram asks for one)."""
    task = visible_task(task_id)
    body = load_json(CompleteTaskSchema())
    user = g.user
    if task.role not in user.roles:
        _refuse(task, "forbidden", "caller lacks the task's role")
        raise Forbidden(f"Only the role '{task.role}' may complete this task.", details={"role": task.role})
    if task.status != "ready":
        _refuse(task, "task_not_ready", f"task is {task.status}")
        raise Conflict("This task is no longer ready; someone may have completed it, or it was cancelled.",
                       code="task_not_ready", details={"task_id": task.id, "status": task.status})
    usecases.validate_form_data(task.therapy, task.form, body["data"])
    extra = None
    if task.signature:
        signature = body["signature"]
        if signature is None:
            raise Invalid(f"This task needs an electronic signature with the meaning '{task.signature}': send "
                          "your password and the meaning.", code="signature_required",
                          details={"field": "signature", "meaning": task.signature})
        if signature["meaning"] != task.signature:
            raise Invalid(f"The signature's meaning must be '{task.signature}'.", code="signature_meaning",
                          details={"field": "signature.meaning"})
        if user.locked:
            raise Unauthorized("Your account is locked after repeated failed signatures; ask an administrator.",
                               code="account_locked")
        if not verify_password(user, signature["password"]):
            with unit_of_work():
                user.failed_signatures += 1
                locked = user.failed_signatures >= MAX_FAILED_SIGNATURES
                user.locked = user.locked or locked
                audit.append(user.username, "signature.failed", "task", task.id, therapy_id=task.therapy_id,
                             site_id=task.site_id, data={"meaning": signature["meaning"],
                                                         "failed_in_a_row": user.failed_signatures,
                                                         "account_locked": locked})
            raise Unauthorized("The password is wrong; the task was not signed.", code="signature_failed")
        user.failed_signatures = 0
        signed_at = utcnow()
        extra = {"action": "signature.applied", "signer": user.username, "printed_name": user.display_name,
                 "meaning": task.signature, "signed_at": iso(signed_at),
                 "signed_hash": signed_content_hash(task, body["data"], task.signature, user.username)}
    therapy = usecases.complete_task(task, body["data"], user.username, extra_audit=extra)
    db.session.refresh(task)
    return {"task": task_item(task), "therapy": therapy_summary(therapy)}, 200
