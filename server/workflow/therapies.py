"""Therapy use cases: start, complete a task, deliver a message, fire timers, cancel.

Each loads the therapy, runs one engine command, and stores the new state, the task projection, the
audit entries and the outbox rows in one transaction.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
from flask import current_app
from sqlalchemy import Select, inspect, select

from engine.definition import message_catchers
from engine.errors import EngineError, StepBudgetExceeded
from engine.events import MessageReceived
from engine.outcome import IncidentOpened
from engine.runtime import Outcome, Runtime
from engine.values import DEFAULT_LIMITS
from server import monitoring
from server.clock import clock
from server.errors import Conflict, Invalid, NotFound
from server.integration import outbox
from server.store import audit, freshness
from server.store.extensions import db
from server.store.models import PARTY_SITE_KINDS, Incident, ProcessDefinition, Site, TaskRecord, Therapy, User
from server.store.uow import (
    LazySavepoint,
    after_commit,
    savepoint,
    savepoint_when_needed,
    unit_of_work,
    write_through,
)
from server.workflow import bookings, effects, incidents, parties
from server.workflow.definitions import definition_forms, engine_definition_by_id, latest_version, message_schema
from server.workflow.operators import OperatorContext
from server.workflow.operators import call as call_operator

# Process data the server sets (at start; ``bookings`` as slots are booked); no script, form or message may
# change it.
PROTECTED_KEYS = ("coi", "patient_reference", "site", "bookings")
# What the server holds for a protected key it keeps nowhere else: nothing a step could leave equals it.
NOT_HELD_HERE = object()


def runtime_for(
    therapy: Therapy, actor: str, definition_id: str | None = None, step: LazySavepoint | None = None
) -> Runtime:
    """A runtime for ``therapy``'s definition version (or ``definition_id``'s) whose service tasks call the
    registered operators, with the configured limits on scripts, on one command and on the process data. With
    ``step``, the step's savepoint is taken before the first service task writes."""
    context = OperatorContext(therapy=therapy, actor=actor)
    config = current_app.config

    def service_caller(operator: str, params: dict, data: dict) -> Any:
        if step is not None:
            step.open()
        with savepoint():  # a failing operator leaves nothing half-written behind, in the chain neither
            return call_operator(operator, context, params)

    return Runtime(
        engine_definition_by_id(definition_id or therapy.definition_id),
        clock=clock(),
        service_caller=service_caller,
        time_limit=config["SCRIPT_TIME_LIMIT"],
        memory_limit_mb=int(config["SCRIPT_MEMORY_MB"]),
        max_steps=int(config["ENGINE_MAX_STEPS"]),
        time_budget=float(config["ENGINE_TIME_BUDGET"]),
        data_limits=DEFAULT_LIMITS.with_chars(int(config["MAX_PROCESS_DATA_CHARS"])),
        protected_keys=PROTECTED_KEYS,
        server_value=lambda key: bookings.process_value(therapy.id) if key == "bookings" else NOT_HELD_HERE,
    )


def run_step(therapy: Therapy, actor: str, command: Callable[[Runtime], Outcome]) -> Outcome:
    """Run one engine command on ``therapy``; when it fails, what its service tasks wrote is undone too.

    A step without a service task sends no statement: inside a unit of work that kept what it read
    (``unit_of_work(keep_loaded=True)``), it runs before the write lock is taken, and the therapy's version
    check at the commit catches a change made meanwhile."""
    started = time.perf_counter()
    try:
        with savepoint_when_needed() as step:
            return command(runtime_for(therapy, actor, step=step))
    finally:
        monitoring.observe_step(time.perf_counter() - started)


def halted_error(incident) -> Invalid:
    """The refusal of a request whose step ran past the engine's budget and was undone."""
    return Invalid(
        f"{incident.message} An incident was opened; an admin can retry or resolve it.",
        code="step_budget_exceeded",
        details={
            "incident_id": incident.id,
            "element_id": incident.activity_id,
            **{k: v for k, v in (incident.details or {}).items() if k in incidents.BUDGET_DETAILS},
        },
    )


def stage_of(outcome: Outcome, therapy: Therapy) -> str:
    """Where the therapy stands, in a few words: its first open task, else what it waits for."""
    if outcome.completed:
        return "Completed"
    if outcome.ready_tasks:
        return outcome.ready_tasks[0].name
    activities = engine_definition_by_id(therapy.definition_id).info.activities
    for wait in outcome.waiting_for:
        if not wait.attached_to:
            activity = activities.get(wait.activity_id)
            name = (activity.name if activity else None) or wait.name or wait.activity_id
            return f"Waiting: {name}"
    return therapy.stage or "Active"


def phase_of(outcome: Outcome, therapy: Therapy) -> str | None:
    """The phase of the journey the therapy is in (``engine.definition`` ``ActivityInfo.phase``): that of its
    first open task, else of what it waits for; ``completed`` once completed (a cancelled therapy keeps the
    phase it stopped in). Where none of these declares a phase, the therapy keeps the one it had."""
    if outcome.completed:
        return "completed" if therapy.status == "completed" else therapy.phase
    activities = engine_definition_by_id(therapy.definition_id).info.activities
    places = [task.activity_id for task in outcome.ready_tasks]
    places += [wait.activity_id for wait in outcome.waiting_for if not wait.attached_to]
    for activity_id in places:
        activity = activities.get(activity_id)
        if activity is not None and activity.phase:
            return activity.phase
    return therapy.phase


def apply_outcome(
    therapy: Therapy, outcome: Outcome, actor: str, *, completed_by: str | None = None
) -> list[TaskRecord]:
    """Store what a command did: state, status, task rows, audit entries and outbox events; returns the rows of
    the tasks the step made ready."""
    now = clock()()
    had_incidents = therapy.has_open_incidents  # read before anything is flushed (a flush forgets it)
    # The therapy's ready task rows: as its task's load read them for this step, else read now.
    loaded = "ready_task_rows" not in inspect(therapy).unloaded
    ready_rows = list(therapy.ready_task_rows) if loaded else None
    if loaded:  # used once: a later step of the same session reads them anew
        db.session.expire(therapy, ["ready_task_rows"])
    therapy.state = outcome.state
    therapy.data = outcome.data
    therapy.waits = [w.to_dict() for w in outcome.waiting_for]
    therapy.current_activities = outcome.current_activities
    therapy.next_due_at = outcome.next_due
    therapy.updated_at = now
    if outcome.completed and therapy.status == "active":
        therapy.status, therapy.ended_at = "completed", now
    therapy.stage, therapy.phase = stage_of(outcome, therapy), phase_of(outcome, therapy)
    if ready_rows is None:
        ready_rows = list(
            db.session.execute(
                select(TaskRecord).where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "ready")
            ).scalars()
        )
    tasks = {t.id: t for t in ready_rows}
    added: list[TaskRecord] = []
    for ready in outcome.ready_tasks:
        row = tasks.get(ready.task_id)
        if row is None:
            added.append(
                TaskRecord(
                    id=ready.task_id,
                    therapy_id=therapy.id,
                    activity_id=ready.activity_id,
                    name=ready.name,
                    role=ready.role,
                    party=ready.party,
                    site_id=parties.task_site(therapy, ready.party),
                    form=ready.form,
                    ui_form=ready.ui_form,
                    instructions=ready.instructions,
                    signature=ready.signature,
                    status="ready",
                    due_at=ready.due_at,
                    created_at=now,
                    instance=ready.instance.to_dict() if ready.instance else None,
                )
            )
            db.session.add(added[-1])
        elif row.due_at is None or row.due_at > now:
            row.due_at = ready.due_at
        # else: the task's deadline has passed (its escalation fired); it keeps it, late since then, until done
    effects.apply_events(effects.Step(therapy, actor, now, completed_by, tasks), outcome.events)
    # Read once for settling and for the halting check; not at all when the therapy had none as its task was
    # read for this step (has_open_incidents) and the step opened none.
    opened = any(isinstance(event, IncidentOpened) for event in outcome.events)
    open_incidents = [] if had_incidents is False and not opened else incidents.unresolved(therapy)
    retry_at = incidents.settle(therapy, outcome, actor, now, open_incidents)
    due = min((d for d in (outcome.next_due, retry_at) if d is not None), default=None)
    if incidents.halting(therapy, open_incidents):  # a step the engine could not take holds the therapy's timers
        due = None
    therapy.next_due_at = due
    therapy_id = therapy.id  # read now: after the commit the row is expired and reading it would reload it
    after_commit(lambda: notify_scheduler(therapy_id, due))
    return added


def notify_scheduler(therapy_id: str, due) -> None:
    """Arm this process's scheduler for the therapy's next due time (after a commit)."""
    scheduler = current_app.extensions.get("tether_scheduler")
    if scheduler is not None:
        scheduler.arm(therapy_id, due)


def start_therapy(
    process_key: str,
    version: int | None,
    site_code: str,
    patient_reference: str,
    data: dict | None,
    actor: str,
    party_sites: Mapping[str, str | None] | None = None,
) -> Therapy:
    """Start a therapy on a definition version (the latest when ``version`` is None) at the treatment centre
    ``site_code``, with the other parties' sites ``party_sites`` names (see ``parties.requested_sites``)."""
    return _start(process_key, version, site_code, patient_reference, data, actor, None, party_sites)[0]


def start_by_message(
    process_key: str,
    version: int,
    site_code: str,
    patient_reference: str,
    message: tuple[str, Any],
    actor: str,
    party_sites: Mapping[str, str | None] | None = None,
) -> tuple[Therapy, str | None]:
    """Start a therapy whose process waits at a message start event, and deliver ``message`` (name, payload)
    to it in the same transaction; returns the therapy and the activity that took the message."""
    return _start(process_key, version, site_code, patient_reference, None, actor, message, party_sites)


def _start(
    process_key: str,
    version: int | None,
    site_code: str,
    patient_reference: str,
    data: dict | None,
    actor: str,
    start_message: tuple[str, Any] | None,
    party_sites: Mapping[str, str | None] | None,
) -> tuple[Therapy, str | None]:
    from server.custody.coi_issuer import next_coi

    if version is None:
        definition = latest_version(process_key)
    else:
        definition = db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == process_key, ProcessDefinition.version == version)
        ).scalar_one_or_none()
    if definition is None:
        raise Invalid(
            f"No deployed process '{process_key}'" + (f" version {version}" if version else "") + ".",
            code="unknown_process",
            details={"field": "process_key"},
        )
    site = db.session.execute(select(Site).where(Site.code == site_code)).scalar_one_or_none()
    if site is None:
        raise Invalid(f"No registered site '{site_code}'.", code="unknown_site", details={"field": "site"})
    if site.kind not in PARTY_SITE_KINDS[parties.TREATMENT]:
        raise Invalid(
            f"Site {site.code} is a {site.kind}; a therapy starts at a treatment centre.",
            code="wrong_site_kind",
            details={"field": "site", "site": site.code, "kind": site.kind},
        )
    sites = parties.requested_sites(site, party_sites)
    if start_message is not None:  # checked before anything is created
        check_payload(
            definition.id,
            start_message[0],
            start_message[1],
            actor,
            subject=("process_definition", definition.id),
            activity_id=next(
                (
                    c.activity_id
                    for c in message_catchers(engine_definition_by_id(definition.id))
                    if c.starts and c.name == start_message[0]
                ),
                None,
            ),
            site_id=site.id,
        )
    with unit_of_work():
        coi = next_coi()
        therapy = Therapy(
            definition=definition,
            definition_id=definition.id,
            process_key=definition.key,
            process_version=definition.version,
            site=site,
            site_id=site.id,
            coi=coi.value,
            patient_reference=patient_reference,
            status="active",
            state={},
            created_by=actor,
            created_at=clock()(),
        )
        db.session.add(therapy)
        parties.assign(therapy, sites, actor)
        db.session.flush()
        initial = {**(data or {}), "coi": coi.value, "patient_reference": patient_reference, "site": site.code}
        try:
            outcome = run_step(therapy, actor, lambda runtime: runtime.start(initial))
        except StepBudgetExceeded as exc:  # the therapy stays as created, before its first step, with an incident
            _keep_unstarted(therapy, exc, initial, actor)
            return therapy, None
        apply_outcome(therapy, outcome, actor)
        if start_message is None:
            return therapy, None
        try:
            outcome = run_step(therapy, actor, lambda runtime: runtime.deliver_message(therapy.state, *start_message))
        except StepBudgetExceeded as exc:  # the therapy exists; the message's step is undone
            incidents.halt(therapy, exc, actor, clock()(), command="deliver_message")
            return therapy, None
        apply_outcome(therapy, outcome, actor)
    return therapy, _receiver(outcome)


def _receiver(outcome: Outcome) -> str | None:
    """The activity that took the message a step delivered, if one did."""
    received = [e for e in outcome.events if isinstance(e, MessageReceived)]
    return received[0].activity_id if received else None


def _keep_unstarted(therapy: Therapy, exc: StepBudgetExceeded, initial: dict, actor: str) -> None:
    """Store a therapy whose first step ran past the budget as it was created, halted by an incident."""
    therapy.state, therapy.data = exc.initial_state or {}, initial
    therapy.waits, therapy.current_activities, therapy.next_due_at = [], [], None
    therapy.stage, therapy.updated_at = "Halted: see incident", clock()()
    outbox.record_event("therapy.started", therapy, {"process_key": therapy.process_key}, actor)
    incidents.halt(therapy, exc, actor, clock()(), command="start")


def get_task(task_id: str) -> TaskRecord:
    """A task row or 404."""
    task = db.session.get(TaskRecord, task_id)
    if task is None:
        raise NotFound("No such task.", code="not_found", details={"task_id": task_id})
    return task


_validators: dict[tuple[str, str], Any] = {}  # (definition id, form name): a stored version's forms never change


def _form_validator(therapy: Therapy, form: str):
    """The JSON Schema validator of a form of the therapy's definition version, built once per process."""
    key = (therapy.definition_id, form)
    if key not in _validators:
        schema = definition_forms(therapy.definition_id).get(form)
        _validators[key] = (
            None
            if schema is None
            else jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        )
    return _validators[key]


def validate_form_data(therapy: Therapy, form: str | None, data: dict) -> None:
    """Check ``data`` against the task's JSON Schema; 422 with one message per field."""
    if not form:
        return
    validator = _form_validator(therapy, form)
    if validator is None:
        return
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        fields: dict[str, str] = {}
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path)
            if not path and error.validator == "required":
                path = error.message.split("'")[1] if "'" in error.message else ""
            fields.setdefault(path or "_form", error.message)
        raise Invalid(
            "The form data is not valid; see the fields.", code="invalid_form_data", details={"fields": fields}
        )


def complete_task(
    task: TaskRecord, data: dict, actor: str, extra_audit: dict | None = None, signer: User | None = None
) -> list[TaskRecord]:
    """Complete a READY task with form ``data`` (checked by the caller, ``server/usecases/task_commands.py``: the
    form, the scanned COI, the signer) and run the therapy to its next wait state.

    With ``signer`` (whose password was checked), the electronic signature is recorded in the same
    transaction as the completion, bound by hash to the task's identity and data. Returns the rows of the tasks
    the step made ready.
    """
    therapy = task.therapy
    if task.status != "ready" or therapy.status != "active":
        raise Conflict(
            "This task is no longer ready; someone may have completed it, or it was cancelled.",
            code="task_not_ready",
            details={"task_id": task.id, "status": task.status},
        )
    halted: Incident | None
    # The task and its therapy were read for the checks; the therapy's version check guards them until the commit.
    with unit_of_work(keep_loaded=True):
        try:
            outcome = run_step(therapy, actor, lambda runtime: runtime.complete_task(therapy.state, task.id, data))
        except StepBudgetExceeded as exc:  # the completion is undone; the incident is kept, then refused
            halted = incidents.halt(therapy, exc, actor, clock()(), command="complete_task")
        except EngineError as exc:
            if exc.code == "task_not_ready":
                raise Conflict(exc.message, code="task_not_ready", details={"task_id": task.id}) from None
            raise
        else:
            halted = None
            made_ready = apply_outcome(therapy, outcome, actor, completed_by=actor)
            if signer is not None:
                from server.compliance.signatures import apply_signature

                apply_signature(task, task.data if task.data is not None else data, signer, clock()())
            if extra_audit:
                audit.append(
                    actor,
                    extra_audit.pop("action"),
                    "task",
                    task.id,
                    data=extra_audit,
                    therapy_id=therapy.id,
                    site_id=therapy.site_id,
                )
            # The therapy (at its version) and its task rows with Core statements, not the session's flush.
            write_through(Therapy, TaskRecord)
            _count_webhook_changes()
    if halted is not None:
        raise halted_error(halted)
    return made_ready


@functools.cache
def _changes_query() -> Select:
    """The webhook subscriptions' change count, built once: the statement keeps its compiled form."""
    return select(freshness.webhook_changes())


def _count_webhook_changes() -> None:
    """On SQLite, read the webhook subscriptions' change count in the write transaction (``freshness``), with a
    statement built once, so that the fan-out trusts its cache of the subscriptions instead of building and sending
    its own query for them (on PostgreSQL the token's query read it in this same transaction already)."""
    session = db.session()
    if session.get_bind().dialect.name != "sqlite":
        return
    freshness.remember(session.connection().execute(_changes_query()).scalar_one())


def payload_errors(definition_id: str, name: str, payload: Any) -> tuple[str, list[dict]] | None:
    """Check a message's payload against the JSON Schema its catching elements declare (``payloadSchema``) in a
    stored version: None when it declares none, else the schema's file name and one error per field, as
    ``{"field": "payload.<path>", "message"}`` (none when the payload is valid)."""
    found = message_schema(definition_id, name)
    if found is None:
        return None
    file, schema = found
    key = (definition_id, file)
    if key not in _validators:
        _validators[key] = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    fields: dict[str, str] = {}
    for error in _validators[key].iter_errors(payload):
        path = ["payload", *(str(p) for p in error.absolute_path)]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance and repr(p) in error.message]
            path += [str(p) for p in missing[:1]]
        text = error.message if len(error.message) <= 300 else error.message[:297] + "..."
        fields.setdefault(".".join(path), text)
    return file, [{"field": field, "message": fields[field]} for field in sorted(fields)]


def check_payload(
    definition_id: str,
    name: str,
    payload: Any,
    actor: str,
    *,
    subject: tuple[str, str],
    activity_id: str | None,
    therapy_id: str | None = None,
    site_id: int | None = None,
) -> None:
    """Refuse (422 ``invalid_payload``, one error per field, audited as ``message.refused``) a payload that fails
    its message's declared JSON Schema; nothing else changes. A message without a declared schema passes."""
    checked = payload_errors(definition_id, name, payload)
    if checked is None or not checked[1]:
        return
    file, errors = checked
    refused = Invalid(
        f"The payload of '{name}' does not match its schema {file}; see the fields.",
        code="invalid_payload",
        details={
            "name": name,
            "activity_id": activity_id,
            "schema": file,
            "errors": errors,
            "fields": {e["field"]: e["message"] for e in errors},
        },
    )
    audit.audit_refusal(
        actor,
        "message.refused",
        subject[0],
        subject[1],
        status=refused.status,
        code=refused.code,
        message=refused.message,
        therapy_id=therapy_id,
        site_id=site_id,
        data={"name": name, "payload": payload, "reason": "invalid_payload", "schema": file, "errors": errors},
    )
    raise refused


def deliver_waiting_message(therapy: Therapy, name: str, payload: Any, actor: str) -> bool:
    """Deliver message ``name`` inside the caller's transaction when the therapy waits for it; else False."""
    if therapy.status != "active" or not any(
        w.get("type") == "message" and w.get("name") == name for w in therapy.waits or []
    ):
        return False
    try:
        outcome = run_step(therapy, actor, lambda runtime: runtime.deliver_message(therapy.state, name, payload))
    except StepBudgetExceeded as exc:  # the delivery is undone; the incident is kept with the caller's writes
        incidents.halt(therapy, exc, actor, clock()(), command="deliver_message")
        return False
    apply_outcome(therapy, outcome, actor)
    return True


def put_process_value(therapy: Therapy, key: str, value: Any, actor: str) -> None:
    """Set process data the server owns (``bookings``) where the process goes on from; inside the caller's
    transaction."""
    outcome = runtime_for(therapy, actor).put_value(therapy.state, key, value)
    therapy.state, therapy.data, therapy.updated_at = outcome.state, outcome.data, clock()()


def correct_process_value(therapy: Therapy, path: list[str | int], value: Any, actor: str) -> None:
    """Set one recorded process-data value in the engine state, so that the process itself goes on with it.

    ``therapy.data`` is refreshed from the new state. Call inside the correcting transaction (the caller
    checks the path, records the correction and audits it).
    """
    outcome = runtime_for(therapy, actor).correct_value(therapy.state, path, value)
    therapy.state, therapy.data, therapy.updated_at = outcome.state, outcome.data, clock()()


def deliver_message(therapy: Therapy, name: str, payload: Any, actor: str) -> tuple[Therapy, str | None]:
    """Deliver message ``name``; 409 ``not_waiting`` (audited, nothing else changed) when not awaited, 422
    ``invalid_payload`` (audited, nothing else changed) when the payload fails the JSON Schema its catching elements
    declare. A held therapy keeps the message (audited ``message.held``), once its payload passed, and takes it when
    it resumes; the activity is then None."""
    waiting = [w for w in therapy.waits if w.get("type") == "message" and w.get("name") == name]
    if therapy.status not in ("active", "on_hold") or not waiting:
        refused = Conflict(
            f"The therapy is not waiting for a message named '{name}'.",
            code="not_waiting",
            details={"name": name, "waiting_for": [w.get("name") for w in therapy.waits if w.get("type") == "message"]},
        )
        # Written even while the database is busy (spooled then), with its own reason.
        audit.audit_refusal(
            actor,
            "message.refused",
            "therapy",
            therapy.id,
            status=refused.status,
            code=refused.code,
            message=refused.message,
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            data={"name": name, "payload": payload, "reason": "not_waiting"},
        )
        raise refused
    check_payload(
        therapy.definition_id,
        name,
        payload,
        actor,
        subject=("therapy", therapy.id),
        activity_id=waiting[0].get("activity_id"),
        therapy_id=therapy.id,
        site_id=therapy.site_id,
    )
    if therapy.status == "on_hold":
        _keep_for_resume(therapy, name, payload, actor)
        return therapy, None
    halted: Incident | None
    with unit_of_work():
        try:
            outcome = run_step(therapy, actor, lambda runtime: runtime.deliver_message(therapy.state, name, payload))
        except StepBudgetExceeded as exc:  # the delivery is undone; the incident is kept, then refused
            halted = incidents.halt(therapy, exc, actor, clock()(), command="deliver_message")
        else:
            halted = None
            apply_outcome(therapy, outcome, actor)
    if halted is not None:
        raise halted_error(halted)
    return therapy, _receiver(outcome) or waiting[0].get("activity_id")


def _keep_for_resume(therapy: Therapy, name: str, payload: Any, actor: str) -> None:
    """Record a message that came while the therapy is held; it is delivered, in order, when it resumes."""
    with unit_of_work():
        therapy.held_messages = [
            *(therapy.held_messages or []),
            {"name": name, "payload": payload, "actor": actor, "at": clock()().isoformat()},
        ]
        audit.append(
            actor,
            "message.held",
            "therapy",
            therapy.id,
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            data={"name": name, "payload": payload},
        )


def fire_due_timers(therapy_id: str, actor: str = "scheduler") -> bool:
    """Fire the due timers (or the due retry of a failed service task) of one therapy; False when it was
    not due (or not active) any more."""
    with unit_of_work():
        query = select(Therapy).where(Therapy.id == therapy_id)
        if db.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Therapy)
        therapy = db.session.execute(query).scalar_one_or_none()
        now = clock()()
        if therapy is None or therapy.status != "active" or therapy.next_due_at is None or therapy.next_due_at > now:
            return False
        monitoring.observe_timer_lateness((now - therapy.next_due_at).total_seconds())
        retry = incidents.due_retry(therapy, now)
        try:
            # A due retry is a failed service task's (only those retry by themselves; each names its task).
            outcome = run_step(
                therapy,
                actor,
                lambda runtime: (
                    runtime.retry_task(therapy.state, retry.task_id)
                    if retry is not None and retry.task_id is not None
                    else runtime.fire_timers(therapy.state)
                ),
            )
        except EngineError as exc:  # undone; the therapy's timers wait for an admin to retry or resolve
            incidents.halt(therapy, exc, actor, now, command="fire_timers")
            return False
        apply_outcome(therapy, outcome, actor)
    return True


def cancel_therapy(
    therapy: Therapy,
    reason: str,
    actor: str,
    reason_code: str = "OTHER",
    also: Callable[[Therapy], None] | None = None,
) -> Therapy:
    """End an active therapy with a reason (its code of kind ``cancel``); its open tasks are withdrawn, and
    ``also`` (freeing its bookings) runs in the same transaction."""
    if therapy.status not in ("active", "on_hold"):
        raise Conflict(f"The therapy is already {therapy.status}.", code="not_active")
    with unit_of_work():
        therapy.held_at, therapy.held_messages = None, None
        if also is not None:
            also(therapy)
        outcome = runtime_for(therapy, actor).cancel(therapy.state, reason, reason_code)
        therapy.status, therapy.ended_at = "cancelled", clock()()
        apply_outcome(therapy, outcome, actor)
        therapy.stage = "Cancelled"
        therapy.next_due_at = None
    return therapy
