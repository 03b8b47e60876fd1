"""How resources look in API responses."""

from __future__ import annotations

from sqlalchemy.orm import contains_eager, defer

from engine.coi import parse_coi
from server.clock import iso
from server.store.models import ProcessDefinition, TaskRecord, Therapy
from server.workflow.definitions import definition_forms


def definition_version(row: ProcessDefinition) -> dict:
    """One deployed version."""
    return {
        "id": row.id,
        "key": row.key,
        "version": row.version,
        "name": row.name,
        "checksum": row.checksum,
        "deployed_at": iso(row.deployed_at),
    }


# Large JSON documents of a therapy that a summary does not show: left in the database when listing.
SUMMARY_DEFERRED = (Therapy.state, Therapy.data, Therapy.waits, Therapy.current_activities)
# The therapy columns a task in a list shows (its COI, patient reference) or needs (its definition's forms).
TASK_THERAPY_COLUMNS = (
    Therapy.id,
    Therapy.coi,
    Therapy.patient_reference,
    Therapy.definition_id,
    Therapy.status,
    Therapy.site_id,
)


def summary_options() -> tuple:
    """Loader options for therapies shown as summaries: their engine state and process data are not read."""
    return tuple(defer(column) for column in SUMMARY_DEFERRED)


def task_list_options() -> tuple:
    """Loader options for a list of tasks selected with ``.join(Therapy)``: that join fills ``task.therapy``
    (no second join) with the few columns a list shows, never the therapy's engine state; the therapy's site is
    the task's (joined with the task)."""
    return (contains_eager(TaskRecord.therapy).load_only(*TASK_THERAPY_COLUMNS).lazyload(Therapy.site),)


def therapy_summary(therapy: Therapy) -> dict:
    """A therapy as lists show it."""
    return {
        "id": therapy.id,
        "coi": therapy.coi,
        "coi_check": parse_coi(therapy.coi).check,
        "status": therapy.status,
        "stage": therapy.stage,
        "process": {"key": therapy.process_key, "version": therapy.process_version},
        "site": therapy.site.code,
        "patient": {"reference": therapy.patient_reference},
        "next_due_at": iso(therapy.next_due_at),
        "created_at": iso(therapy.created_at),
        "updated_at": iso(therapy.updated_at),
        "ended_at": iso(therapy.ended_at),
    }


def task_item(task: TaskRecord, forms: dict | None = None) -> dict:
    """A user task as the task list shows it."""
    forms = forms if forms is not None else definition_forms(task.therapy.definition_id)
    form = None
    if task.form:
        ui_schema = forms.get(task.ui_form, {}) if task.ui_form else {}
        form = {"name": task.form, "schema": forms.get(task.form, {}), "ui_schema": ui_schema}
    return {
        "id": task.id,
        "therapy_id": task.therapy_id,
        "coi": task.therapy.coi,
        "activity_id": task.activity_id,
        "name": task.name,
        "role": task.role,
        "site": task.site.code,
        "instructions": task.instructions,
        "form": form,
        "signature": {"meaning": task.signature} if task.signature else None,
        "status": task.status,
        "created_at": iso(task.created_at),
        "due_at": iso(task.due_at),
        "completed_at": iso(task.completed_at),
        "completed_by": task.completed_by,
    }
