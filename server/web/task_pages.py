"""The task inbox and the task page: the form drawn from its JSON Schema, completed by the ``CompleteTask`` command."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from engine.definition import EVIDENCE_RECORDS, choice_text, message_catchers
from server import usecases
from server.access.auth import sees_patient, withhold_patient
from server.compliance.signatures import signature_rule
from server.custody import conditions, transfers
from server.custody import shipments as shipment_records
from server.errors import ApiError, NotFound
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, TaskRecord
from server.usecases import checks, reads
from server.usecases.task_commands import prefilled
from server.workflow.definitions import engine_definition

from . import bp
from .form_data import FormShapeError, friendly, parse_submission, utc_to_local
from .form_fields import build_fields, field_paths, options_of
from .network import patient_reference, therapies_named
from .session import login_required, page_user
from .slots import fill_pickers


def inbox_query(user, therapy_filter: str = "", role: str = ""):
    """The inbox (``usecases.reads.inbox_query``), narrowed to the therapies ``therapy_filter`` names (id, COI,
    or a patient reference the user may know)."""
    query = reads.inbox_query(user, role)
    if therapy_filter:
        query = query.where(TaskRecord.therapy_id.in_([t.id for t in therapies_named(user, therapy_filter)]))
    return query


@bp.get("/tasks")
@login_required()
def inbox():
    """The tasks you may complete, soonest due first; late ones marked; filter by therapy and role."""
    user = page_user()
    therapy_filter, role = request.args.get("therapy", "").strip(), request.args.get("role", "")
    tasks = db.session.execute(inbox_query(user, therapy_filter, role).limit(500)).scalars().all()
    return render_template("web/inbox.html", tasks=tasks, therapy_filter=therapy_filter, role=role, roles=user.roles)


def visible_task(task_id: str) -> TaskRecord | None:
    """The task when its site is visible to the session's user."""
    try:
        return checks.visible_task(page_user(), task_id)
    except NotFound:
        return None


def _form_schemas(task: TaskRecord) -> tuple[dict, dict]:
    forms = task.therapy.definition.forms or {}
    schema = forms.get(task.form, {}) if task.form else {}
    ui_schema = forms.get(task.ui_form, {}) if task.ui_form else {}
    return schema, ui_schema


def _initial_values(schema: dict, data: dict | None, offset: int) -> dict:
    """Inputs' texts for data already recorded (a completed task shown read-only), or for what the system already
    knows of a ready task's fields (``ui:prefill``, in ``data`` too)."""
    values: dict = {}
    for key, prop in (schema.get("properties") or {}).items():
        if not data or key not in data:
            continue
        value = data[key]
        if isinstance(prop, dict) and prop.get("format") == "date-time" and isinstance(value, str):
            value = utc_to_local(value, offset)
        values[f"data.{key}"] = value
    return values


def signing(task: TaskRecord, schema: dict, ui_schema: dict, values: dict) -> dict | None:
    """The signature prompt: the meaning the chosen decision selects (the first when none is chosen yet) and,
    when the meaning follows a decision, the field's input name and each choice's label and meaning."""
    if not task.signature:
        return None
    field, meanings = signature_rule(task)
    if not field:
        return {"meaning": task.signature, "field": None, "meanings": {}, "choices": []}
    chosen = values.get(f"data.{field}")
    if isinstance(chosen, list):
        chosen = chosen[0] if chosen else None
    prop = (schema.get("properties") or {}).get(field) or {}
    labels = {choice_text(value): label for value, label in options_of(prop, ui_schema.get(field) or {})}
    return {
        "meaning": meanings.get(str(chosen), task.signature) if chosen not in (None, "") else task.signature,
        "field": f"data.{field}",
        "meanings": meanings,
        "choices": [(str(labels.get(value, value)), meaning) for value, meaning in meanings.items()],
    }


# At most this many excursion readings and open alerts beside a form (the therapy page has them all).
EVIDENCE_ROWS = 50


def evidence(task: TaskRecord, user) -> dict[str, Any] | None:
    """What the task's decision rests on, as its diagram's ``evidence`` property names it: the messages received
    (each payload from the process data, under its catching element's variable, with when it came), the
    condition readings' summary and excursions, the custody chain and its breaks, the shipments and the open
    alerts. None when the task declares no evidence."""
    therapy = task.therapy
    declared = ((therapy.definition.info or {}).get("user_tasks") or {}).get(task.activity_id) or {}
    items = list(declared.get("evidence") or [])
    if not items:
        return None
    asked = set(items)
    out: dict[str, Any] = {"items": items}
    selectors = [i for i in items if i not in EVIDENCE_RECORDS]
    if selectors:
        out["messages"] = _evidence_messages(task, selectors, user)
    if "conditions" in asked:
        out["conditions"] = {
            "summary": conditions.summary(therapy.id),
            "excursions": conditions.excursion_readings(therapy.id, limit=EVIDENCE_ROWS),
        }
    if "custody" in asked:
        chain = transfers.chain(therapy.id)
        out["custody"] = {"chain": chain, "breaks": transfers.breaks(chain)}
    if "shipments" in asked:
        out["shipments"] = [shipment_records.shipment_item(s, therapy) for s in shipment_records.of_therapy(therapy.id)]
    if "alerts" in asked:
        out["alerts"] = (
            db.session.execute(
                select(Alert)
                .where(Alert.therapy_id == therapy.id, Alert.status == "open")
                .order_by(Alert.raised_at.desc())
                .limit(EVIDENCE_ROWS)
            )
            .scalars()
            .all()
        )
    return out


def _evidence_messages(task: TaskRecord, selectors: list[str], user) -> list[dict[str, Any]]:
    """The messages the selectors name (a message's name, or the part of names before the first dot), in the
    order of the diagram: each once per variable it lands in, with its payload and when it was last received."""
    therapy = task.therapy
    catchers = message_catchers(engine_definition(therapy.definition))
    received: dict[str | None, Any] = {}
    for at, data in db.session.execute(
        select(AuditEntry.at, AuditEntry.data)
        .where(AuditEntry.therapy_id == therapy.id, AuditEntry.action == "message.received")
        .order_by(AuditEntry.seq)
    ):
        received[(data or {}).get("activity_id")] = at
    process_data = therapy.data or {}
    hidden = not sees_patient(user, therapy)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None]] = set()
    for catcher in catchers:
        prefix = catcher.name.split(".", 1)[0]
        if catcher.starts or not (catcher.name in selectors or prefix in selectors):
            continue
        key = (catcher.name, catcher.variable)
        when = received.get(catcher.activity_id)
        if key in seen:
            if when is not None:  # the same message caught by another element: keep the latest time
                for item in out:
                    if (item["name"], item["variable"]) == key and (item["at"] is None or item["at"] < when):
                        item["at"] = when
            continue
        seen.add(key)
        payload = process_data.get(catcher.variable) if catcher.variable else None
        if hidden and payload is not None:
            payload = withhold_patient(payload, therapy.patient_reference)
        activity = (therapy.definition.info.get("activities") or {}).get(catcher.activity_id) or {}
        out.append(
            {
                "name": catcher.name,
                "variable": catcher.variable,
                "activity": activity.get("name") or catcher.activity_id,
                "at": when,
                "payload": payload,
            }
        )
    return out


def render_task(
    task: TaskRecord,
    values: dict | None = None,
    errors: dict | None = None,
    form_errors: list[str] | None = None,
    signature_error: str | None = None,
    status: int = 200,
):
    """The task page with its form (inputs, errors next to their fields, the signature prompt)."""
    user = page_user()
    schema, ui_schema = _form_schemas(task)
    errors = errors or {}
    if not values:
        prefill = prefilled(task, schema, ui_schema)
        if prefill and not sees_patient(user, task.therapy):
            prefill = withhold_patient(prefill, task.therapy.patient_reference)
        values = _initial_values(schema, task.data or prefill, 0)
    fields = build_fields(schema, ui_schema, values, errors)
    fill_pickers(fields, task.therapy)
    known = field_paths(fields)
    extra = [
        f"{path}: {message}" if path not in ("", "_form") else message
        for path, message in errors.items()
        if path not in known
    ]
    can_complete = (
        task.status == "ready"
        and task.role in user.roles
        and task.therapy.status == "active"
        and task.site_id is not None
    )
    return render_template(
        "web/task.html",
        task=task,
        therapy=task.therapy,
        schema=schema,
        fields=fields,
        form_errors=(form_errors or []) + extra,
        signature_error=signature_error,
        signing=signing(task, schema, ui_schema, values),
        evidence=evidence(task, user),
        can_complete=can_complete,
    ), status


@bp.get("/tasks/<task_id>")
@login_required()
def task_page(task_id: str):
    """One task: instructions, therapy, form (or, once done, what was recorded and by whom)."""
    task = visible_task(task_id)
    if task is None:
        return render_template(
            "web/error.html",
            status=404,
            title="Not found",
            message="There is no such task, or it is not visible to you.",
        ), 404
    return render_task(task)


def _offset() -> int:
    try:
        return max(-1440, min(1440, int(request.form.get("_tz_offset", "0") or 0)))
    except ValueError:
        return 0


@bp.post("/tasks/<task_id>")
@login_required()
def complete_task(task_id: str):
    """Complete the task with the submitted form: the ``CompleteTask`` command, as the API runs it."""
    task = visible_task(task_id)
    if task is None:
        return render_template(
            "web/error.html",
            status=404,
            title="Not found",
            message="There is no such task, or it is not visible to you.",
        ), 404
    schema, ui_schema = _form_schemas(task)
    # Each input's text, or its texts when several were sent (or the field is a list).
    values: dict[str, str | list[str]] = {
        k: (v if len(v) > 1 or k in _multi_names(schema) else v[0]) for k, v in request.form.to_dict(flat=False).items()
    }
    try:
        data = parse_submission(schema, ui_schema, request.form, _offset())
    except FormShapeError as exc:
        return render_task(
            task, values, exc.errors, ["Some answers need correcting; see the marked fields."], status=422
        )
    signature = None
    if task.signature:
        # The meaning the user confirmed (the prompt shows the one their decision selects); the command checks it.
        password, confirmed = request.form.get("signature_password", ""), request.form.get("signature_meaning", "")
        if password or confirmed:
            signature = {"password": password, "meaning": confirmed}
    try:
        usecases.complete_task(usecases.CompleteTask(task_id=task.id, by=page_user(), data=data, signature=signature))
    except ApiError as exc:
        db.session.rollback()  # whatever the refused command left open is closed before the page reads
        return _refused(task, values, exc)
    return _after_completion(task)


def _multi_names(schema: dict) -> set[str]:
    return {
        f"data.{k}"
        for k, p in (schema.get("properties") or {}).items()
        if isinstance(p, dict) and p.get("type") == "array"
    }


def _refused(task: TaskRecord, values: dict, refusal: ApiError):
    """Show the refusal on the page: field errors next to their fields, the rest above the form."""
    task = db.session.get_one(TaskRecord, task.id)  # tasks are never deleted
    details = refusal.details
    code = refusal.code
    errors: dict[str, str] = {}
    form_errors: list[str] = []
    signature_error = None
    if isinstance(details.get("fields"), dict):
        for path, message in details["fields"].items():
            text = message if isinstance(message, str) else "; ".join(map(str, message))
            errors[path.removeprefix("data.")] = friendly(text)
        form_errors.append("Some answers need correcting; see the marked fields.")
    elif (
        code.startswith("signature")
        or code == "account_locked"
        or str(details.get("field", "")).startswith("signature")
    ):
        signature_error = refusal.message
    elif isinstance(details.get("field"), str) and details["field"] not in ("", "data"):
        errors[details["field"].removeprefix("data.")] = refusal.message
        form_errors.append(refusal.message)
    else:
        form_errors.append(refusal.message)
    return render_task(task, values, errors, form_errors, signature_error, status=refusal.status)


def _after_completion(task: TaskRecord):
    """Straight on to the therapy's next task when it is yours; else back to the inbox."""
    user = page_user()
    flash(f"Completed: {task.name} ({patient_reference(task.therapy)}).", "success")
    following = db.session.execute(
        inbox_query(user).where(TaskRecord.therapy_id == task.therapy_id).limit(1)
    ).scalar_one_or_none()
    if following is not None:
        return redirect(url_for("web.task_page", task_id=following.id))
    return redirect(url_for("web.inbox"))
