"""User tasks: the inbox, one task, completion (with form validation and electronic signature)."""

from __future__ import annotations

from flask import g, request

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import CompleteTaskSchema, load_json
from server.clock import iso
from server.compliance.signatures import signatures_for_task
from server.store.models import TaskRecord
from server.usecases.checks import visible_task
from server.usecases.reads import inbox_query
from server.usecases.task_commands import task_to_complete

from . import bp
from .paging import page
from .views import task_item, therapy_summary


@bp.get("/tasks")
@require()
def list_tasks():
    """READY tasks the caller may complete, soonest due first."""
    query = inbox_query(g.user, request.args.get("role", ""))
    if request.args.get("therapy_id"):
        query = query.where(TaskRecord.therapy_id == request.args["therapy_id"])
    return page(query, task_item)


@bp.get("/tasks/<task_id>")
@require()
def get_task(task_id: str):
    """One task, ready or done, with its recorded data and signatures once completed."""
    return task_detail(visible_task(g.user, task_id))


def task_detail(task: TaskRecord) -> dict:
    """One task with its electronic signatures (printed name, time, meaning, still valid or not)."""
    return {
        **task_item(task),
        "data": task.data if task.status == "completed" else None,
        # Only a task whose diagram asks for a signature is ever signed.
        "signatures": signatures_for_task(task) if task.signature else [],
    }


@bp.post("/tasks/<task_id>/complete")
@require()
@idempotent
def complete_task(task_id: str):
    """Complete a READY task with form data (and a signature when the diagram asks for one)."""
    seen = task_to_complete(g.user, task_id)  # an unknown or unseen task is 404 before its body is read
    body = load_json(CompleteTaskSchema())
    # ``seen`` stays referenced, so the handler finds the task (and its therapy) in the session, not read again.
    completed = usecases.complete_task(
        usecases.CompleteTask(task_id=seen.id, by=g.user, data=body["data"], signature=body["signature"])
    )
    task = completed.task
    return {
        "task": task_detail(task),
        "therapy": therapy_summary(task.therapy),
        "next_tasks": [next_task_item(row) for row in completed.next_tasks],
    }, 200


def next_task_item(task: TaskRecord) -> dict:
    """A task a completion made ready, as its answer names it (enough to complete it next without a GET)."""
    return {
        "id": task.id,
        "activity_id": task.activity_id,
        "name": task.name,
        "role": task.role,
        "due_at": iso(task.due_at),
    }
