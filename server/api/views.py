"""How resources look in API responses."""

from __future__ import annotations

from flask import g

from engine.coi import parse_coi
from server.access.auth import sees_patient, withhold_patient
from server.clock import clock, iso
from server.compliance.signatures import signature_rule
from server.store.models import ProcessDefinition, TaskRecord, Therapy
from server.usecases.task_commands import prefilled
from server.workflow.definitions import definition_forms, version_calls
from server.workflow.lifecycle import can_reschedule


def definition_version(row: ProcessDefinition) -> dict:
    """One deployed version."""
    return {
        "id": row.id,
        "key": row.key,
        "version": row.version,
        "name": row.name,
        "checksum": row.checksum,
        "deployed_at": iso(row.deployed_at),
        "calls": version_calls(row),
    }


def therapy_summary(therapy: Therapy) -> dict:
    """A therapy as lists show it, to the caller: the patient reference only when they need to know it
    (``access.auth.sees_patient``), else ``"patient": null``."""
    return {
        "id": therapy.id,
        "coi": therapy.coi,
        "coi_check": parse_coi(therapy.coi).check,
        "status": therapy.status,
        "stage": therapy.stage,
        "phase": therapy.phase,
        "process": {"key": therapy.process_key, "version": therapy.process_version},
        "site": therapy.site.code,
        "parties": therapy.parties,
        "patient": {"reference": therapy.patient_reference} if sees_patient(g.user, therapy) else None,
        "held_since": iso(therapy.held_at),
        "reschedulable": can_reschedule(therapy),
        "next_due_at": iso(therapy.next_due_at),
        "created_at": iso(therapy.created_at),
        "updated_at": iso(therapy.updated_at),
        "ended_at": iso(therapy.ended_at),
    }


def signature_item(task: TaskRecord) -> dict | None:
    """The signature a task asks for: its meaning, and, when the meaning follows a decision, the deciding field
    and each of its values' meaning (``meaning`` is then the first one's)."""
    if not task.signature:
        return None
    field, meanings = signature_rule(task)
    if not field:
        return {"meaning": task.signature}
    return {"meaning": task.signature, "field": field, "meanings": meanings}


def task_item(task: TaskRecord, forms: dict | None = None) -> dict:
    """A user task as the task list shows it."""
    forms = forms if forms is not None else definition_forms(task.therapy.definition_id)
    form = None
    if task.form:
        ui_schema = forms.get(task.ui_form, {}) if task.ui_form else {}
        schema = forms.get(task.form, {})
        form = {"name": task.form, "schema": schema, "ui_schema": ui_schema}
        known = prefilled(task, schema, ui_schema)
        if known:
            sees = sees_patient(g.user, task.therapy)
            form["prefill"] = known if sees else withhold_patient(known, task.therapy.patient_reference)
    return {
        "id": task.id,
        "therapy_id": task.therapy_id,
        "coi": task.therapy.coi,
        "activity_id": task.activity_id,
        "name": task.name,
        "role": task.role,
        "party": task.party,
        "site": task.site.code if task.site else None,
        "instructions": task.instructions,
        "form": form,
        "signature": signature_item(task),
        "status": task.status,
        "created_at": iso(task.created_at),
        "due_at": iso(task.due_at),
        "late": task.status == "ready" and task.due_at is not None and task.due_at <= clock()(),
        "completed_at": iso(task.completed_at),
        "completed_by": task.completed_by,
        "instance": task.instance,
    }
