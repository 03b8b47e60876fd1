"""Running one instance of a definition: each command restores the state, acts, runs the engine to its
next wait state, and reports what happened.

A command never writes anywhere; the caller stores ``Outcome.state`` and acts on ``Outcome.events``
(audit, webhooks, timer scheduling) in one transaction.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import CycleTimerEventDefinition, TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.events.end_event import EndEvent
from SpiffWorkflow.bpmn.util.event import BpmnEvent
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.specs.defaults import ServiceTask
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition as SpiffMessageEventDefinition
from SpiffWorkflow.util.task import TaskState

from . import clock as engine_clock
from . import compaction, spiff_patches
from . import events as ev
from .definition import Definition
from .errors import (
    EngineError,
    NotMigratable,
    NotWaiting,
    ProcessDataRejected,
    ScriptFailed,
    ServiceCallFailed,
    StepBudgetExceeded,
    TaskNotReady,
)
from .outcome import FailedTask, IncidentOpened, Instance, Outcome, ReadyTask, Wait, due_at, instance_host, process_data
from .serialization import state_from_dict, state_to_dict
from .values import DEFAULT_LIMITS, ENGINE_LEAVES, ValueLimits, ValueRejected, check_value

__all__ = ["DEFAULT_RETRIES", "FailedTask", "IncidentOpened", "Outcome", "ReadyTask", "Runtime", "Wait"]

ServiceCaller = Callable[[str, dict, dict], Any]
DEFAULT_RETRIES = 3
# Engine passes per command: enough to catch up on many missed cycle occurrences, bounded so that a
# diagram can never spin; whatever is still due is picked up by the next command.
MAX_ROUNDS = 100
# What one command may do before it is stopped and undone (a diagram that loops without waiting).
MAX_STEPS = 1_000
TIME_BUDGET = 5.0  # seconds of the command's own CPU time
BUDGET_WALL_FACTOR = 3  # and, as a backstop, this many times that in wall time (well inside a worker's timeout)
_ABSENT = object()


class Runtime:
    """Runs commands against instances of one definition."""

    def __init__(
        self,
        definition: Definition,
        *,
        clock: engine_clock.Clock = engine_clock.system_clock,
        service_caller: ServiceCaller | None = None,
        time_limit: float = 1.0,
        compact_above: int | None = compaction.KEEP_TASKS,
        max_steps: int = MAX_STEPS,
        time_budget: float = TIME_BUDGET,
        data_limits: ValueLimits = DEFAULT_LIMITS,
        protected_keys: tuple[str, ...] = (),
        memory_limit_mb: int | None = None,
        server_value: Callable[[str], Any] | None = None,
    ):
        """Run commands on instances of ``definition``.

        ``time_limit``: seconds one script or expression may run; ``memory_limit_mb``: memory one script may
        take (scripts run in a separate process). ``max_steps`` and ``time_budget``: elements one command may
        complete and seconds of CPU time it may take (its thread's; ``BUDGET_WALL_FACTOR`` times that in wall time
        as a backstop) before it is stopped and undone (``StepBudgetExceeded``).
        ``data_limits``: how large the process data a step leaves may be; ``protected_keys``: process data
        no step may change once set (``ProcessDataRejected``), unless the step leaves exactly what
        ``server_value(key)`` says the server holds (a booking operator reporting the places it booked).
        ``compact_above``: cut finished history once the task tree holds more tasks (None: never).
        """
        spiff_patches.apply()
        self.definition = definition
        self.compact_above = compact_above
        self.clock = clock
        self.service_caller = service_caller
        self.time_limit = time_limit
        self.memory_limit_mb = memory_limit_mb
        self.max_steps, self.time_budget = max_steps, time_budget
        self.data_limits, self.protected_keys = data_limits, tuple(protected_keys)
        self.server_value = server_value

    # -- commands -------------------------------------------------------------------------------
    def start(self, data: Mapping[str, Any] | None = None) -> Outcome:
        """Create an instance with ``data`` as its initial process data and run it to its first wait."""
        events: list[ev.DomainEvent] = [ev.ProcessStarted(process_key=self.definition.info.key)]
        try:
            return self._run(self._new_workflow(data), events, lambda: None, fresh=True)
        except StepBudgetExceeded as exc:
            exc.initial_state = state_to_dict(self._new_workflow(data))
            raise

    def _new_workflow(self, data: Mapping[str, Any] | None) -> BpmnWorkflow:
        workflow = BpmnWorkflow(
            self.definition.spec, self.definition.subprocess_specs, script_engine=self._script_engine()
        )
        workflow.task_tree.data.update(dict(data or {}))
        return workflow

    def complete_task(self, state: Mapping, task_id: str, data: Mapping[str, Any] | None = None) -> Outcome:
        """Complete the READY user task ``task_id`` with form ``data``."""
        workflow = self._restore(state)
        task = self._find_task(workflow, task_id)
        if task is None or task.state != TaskState.READY or not task.task_spec.manual:
            raise TaskNotReady(f"Task {task_id} is not ready to be completed.", details={"task_id": task_id})
        info = self.definition.info.user_tasks.get(task.task_spec.bpmn_id)
        if clash := sorted(set(data or {}).intersection(self.protected_keys)):
            raise ProcessDataRejected(
                f"The form data may not set {', '.join(clash)}: set by the server.",
                details={"fields": {key: "protected" for key in clash}},
            )
        events: list[ev.DomainEvent] = []

        def act():
            task.data.update(dict(data or {}))
            task.run()
            events.append(
                ev.TaskCompleted(
                    task_id=str(task.id),
                    activity_id=task.task_spec.bpmn_id,
                    name=info.name if info else task.task_spec.bpmn_name or "",
                    data=dict(data or {}),
                )
            )

        return self._run(workflow, events, act, exclude={task.id})

    def deliver_message(self, state: Mapping, name: str, payload: Any) -> Outcome:
        """Deliver message ``name`` with ``payload``; ``NotWaiting`` when nothing waits for it."""
        workflow = self._restore(state)
        waiting = [w for w in self._waits(workflow) if w.type == "message" and w.name == name]
        if not waiting:
            raise NotWaiting(f"The therapy is not waiting for a message named '{name}'.", details={"name": name})

        def act():
            workflow.catch(BpmnEvent(SpiffMessageEventDefinition(name), payload))

        return self._run(workflow, [], act)

    def fire_timers(self, state: Mapping) -> Outcome:
        """Fire every timer that is due by the clock and run the engine on."""
        workflow = self._restore(state)
        return self._run(workflow, [], workflow.refresh_timers)

    def shift_timers(self, state: Mapping, seconds: float) -> Outcome:
        """Move every armed timer's due time ``seconds`` later: a hold stopped the instance's clocks that long, so
        each timer keeps the time it had left (a cycle's next occurrence moves too). Nothing runs."""
        workflow = self._restore(state)
        later = timedelta(seconds=seconds)
        for task in list(workflow.event_manager.tasks.values()):
            if task.state != TaskState.WAITING or not isinstance(task.task_spec.event_definition, TimerEventDefinition):
                continue
            value = task._get_internal_data("event_value")
            if value is None or task._get_internal_data("event_fired"):
                continue  # not armed yet: it counts from when it is
            if isinstance(value, dict):
                if value.get("next"):
                    value = {**value, "next": (TimerEventDefinition.get_datetime(value["next"]) + later).isoformat()}
            else:
                value = (TimerEventDefinition.get_datetime(value) + later).isoformat()
            task._set_internal_data(event_value=value)
        return self._outcome(workflow, [])

    def migrate_from(self, old: Definition, state: Mapping, activity_map: Mapping[str, str] | None = None) -> Outcome:
        """Move an instance of ``old`` onto this runtime's definition (a later version of the process), from where
        it stands: every task keeps its id where its element id is the same (or ``activity_map`` maps the old id
        to the new one), the open ones are taken up again on the new version, and nothing else runs.

        Raises ``NotMigratable`` naming the activity when an open task or waiting event would be left without a
        counterpart, when the map names an activity either version does not have, or when a subprocess the
        instance is inside does not exist in the new version. Uses SpiffWorkflow's spec diff and migration.
        """
        from SpiffWorkflow.bpmn.util.diff import SpecDiff, WorkflowDiff, migrate_workflow

        from .serialization import spec_registry, state_from_dict

        mapping = dict(activity_map or {})
        workflow = state_from_dict(state, old.spec, old.subprocess_specs, self._script_engine())
        for before, after in mapping.items():
            if before not in workflow.spec.task_specs:
                raise NotMigratable(f"The activity map names '{before}', which version being left does not have.")
            if after not in self.definition.spec.task_specs:
                raise NotMigratable(f"The activity map names '{after}', which the new version does not have.")
        for sub in workflow.subprocesses.values():
            if sub.spec.name not in self.definition.subprocess_specs:
                raise NotMigratable(f"The instance is inside '{sub.spec.name}', which the new version does not have.")
        new_specs = self.definition.spec.task_specs
        for before, after in list(mapping.items()):  # what the engine derives from a mapped element follows it
            for name in workflow.spec.task_specs:
                if name.startswith(f"{before}.") and f"{after}{name[len(before) :]}" in new_specs:
                    mapping.setdefault(name, f"{after}{name[len(before) :]}")
        diff = SpecDiff(spec_registry(), workflow.spec, self.definition.spec)
        for spec in list(diff.alignment):
            if spec.name in mapping:
                diff.alignment[spec] = new_specs[mapping[spec.name]]
        aligned = WorkflowDiff(workflow, diff)
        open_states = TaskState.READY | TaskState.WAITING | TaskState.STARTED | TaskState.ERROR
        for task in aligned.removed:
            if task.state & open_states and getattr(task.task_spec, "bpmn_id", None):
                raise NotMigratable(
                    f"The open activity '{task.task_spec.bpmn_id}' has no counterpart in the new version; map it to "
                    "one with activity_map.",
                    element_id=task.task_spec.bpmn_id,
                )
        # SpiffWorkflow resets the open tasks onto the new specs; a waiting timer keeps the time it was due.
        kept = {t.id: dict(t.internal_data) for t in workflow.get_tasks(state=TaskState.WAITING) if t.internal_data}
        migrate_workflow(aligned, workflow, self.definition.spec)
        for task_id, internal in kept.items():
            if task_id in workflow.tasks:
                workflow.tasks[task_id].internal_data.update(internal)
        known = set(map(id, new_specs.values()))
        for task in workflow.get_tasks(skip_subprocesses=True):
            if id(task.task_spec) not in known:
                name = getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name.split(".", 1)[0]
                raise NotMigratable(
                    f"The instance has passed '{name}', which the new version no longer has; map it to its "
                    "counterpart with activity_map.",
                    element_id=getattr(task.task_spec, "bpmn_id", None),
                )
        for sub in list(workflow.subprocesses.values()):
            new_sub = self.definition.subprocess_specs[sub.spec.name]
            sub_diff = WorkflowDiff(sub, SpecDiff(spec_registry(), sub.spec, new_sub))
            for task in sub_diff.removed:  # inside a subprocess or a called process, as at the top
                if task.state & open_states and getattr(task.task_spec, "bpmn_id", None):
                    raise NotMigratable(
                        f"The open activity '{task.task_spec.bpmn_id}' inside '{sub.spec.name}' has no counterpart "
                        "in the new version.",
                        element_id=task.task_spec.bpmn_id,
                    )
            migrate_workflow(sub_diff, sub, new_sub)
        return self._run(workflow, [], lambda: None)

    def retry_task(self, state: Mapping, task_id: str) -> Outcome:
        """Run the failed service task ``task_id`` again (and fire whatever timers are due meanwhile)."""
        workflow = self._restore(state)
        task = self._failed_task(workflow, task_id)

        def act():
            _make_ready_again(task)
            workflow.refresh_timers()

        return self._run(workflow, [], act, retrying=task.id)

    def skip_task(self, state: Mapping, task_id: str, result: Any = None) -> Outcome:
        """Complete the failed service task ``task_id`` without calling its operator, with ``result`` as its
        result, and run on: the step was done by hand."""
        workflow = self._restore(state)
        task = self._failed_task(workflow, task_id)

        def act():
            _make_ready_again(task)
            task.data[task.task_spec.result_variable] = result
            task.complete()

        return self._run(workflow, [], act)

    def cancel(self, state: Mapping, reason: str = "", reason_code: str = "") -> Outcome:
        """End the instance: every open task is cancelled (``reason_code`` classifies ``reason``)."""
        workflow = self._restore(state)
        before = self._ready_user_tasks(workflow)
        with engine_clock.using(self.clock):
            workflow.cancel()
        events: list[ev.DomainEvent] = [
            ev.TaskCancelled(task_id=str(t.id), activity_id=t.task_spec.bpmn_id, name=self._task_name(t))
            for t in before
        ]
        events.append(ev.ProcessCancelled(reason=reason, reason_code=reason_code))
        return self._outcome(workflow, events)

    def inspect(self, state: Mapping) -> Outcome:
        """Describe an instance without changing it."""
        return self._outcome(self._restore(state), [])

    def put_value(self, state: Mapping, key: str, value: Any) -> Outcome:
        """Set the top-level process-data value ``key`` that the server owns (bookings, for example), where the
        process goes on from, creating it when it is not there yet. Nothing runs."""
        return self._set(state, [key], value, create=True)

    def correct_value(self, state: Mapping, path: list[str | int], value: Any) -> Outcome:
        """Set one recorded process-data value, so that the process itself goes on with it (a correction).

        The value changes in the data of the instance's open tasks (where the process continues from) or,
        when nothing is open, in its last task's, and in the tasks before them (a waiting event takes its
        parent's data again when it fires). Nothing runs; containers that do not hold ``path`` are left alone.
        """
        return self._set(state, path, value, create=False)

    def _set(self, state: Mapping, path: list[str | int], value: Any, *, create: bool) -> Outcome:
        workflow = self._restore(state)
        open_tasks = [
            t
            for t in workflow.get_tasks(state=TaskState.READY | TaskState.WAITING | TaskState.STARTED)
            if getattr(t.task_spec, "bpmn_id", None)
        ]
        targets = {}
        for task in open_tasks or [workflow.last_task or workflow.task_tree]:
            while task is not None and task.id not in targets:
                targets[task.id] = task
                task = task.parent
        for task in targets.values():
            container = task.data
            for key in path[:-1]:
                container = container[key] if _holds(container, key) else None
            if container is not None and (_holds(container, path[-1]) or (create and isinstance(container, dict))):
                container[path[-1]] = value
        return self._outcome(workflow, [])

    # -- internals ------------------------------------------------------------------------------
    def _script_engine(self):
        from .sandbox import SandboxScriptEngine

        return SandboxScriptEngine(
            service_caller=self.service_caller,
            time_limit=self.time_limit,
            memory_limit_mb=self.memory_limit_mb,
            data_limits=self.data_limits,
            protected_keys=self.protected_keys,
        )

    def _restore(self, state: Mapping) -> BpmnWorkflow:
        return state_from_dict(state, self.definition.spec, self.definition.subprocess_specs, self._script_engine())

    def _save(self, workflow: BpmnWorkflow) -> dict:
        """The state an outcome hands on (``_restore`` takes it back)."""
        return state_to_dict(workflow)

    def _failed_task(self, workflow: BpmnWorkflow, task_id: str):
        task = self._find_task(workflow, task_id)
        if task is None or task.state != TaskState.ERROR or not isinstance(task.task_spec, ServiceTask):
            raise TaskNotReady(f"Task {task_id} is not a failed service task.", details={"task_id": task_id})
        return task

    @staticmethod
    def _find_task(workflow: BpmnWorkflow, task_id: str):
        try:
            return workflow.get_task_from_id(UUID(str(task_id)))
        except (ValueError, TypeError, KeyError, Exception):  # unknown or malformed ids are simply absent
            return None

    def _task_name(self, task) -> str:
        bpmn_id = task.task_spec.bpmn_id
        info = self.definition.info.activities.get(bpmn_id)
        return (info.name if info else None) or task.task_spec.bpmn_name or bpmn_id or ""

    def _ready_user_tasks(self, workflow: BpmnWorkflow) -> list:
        return [
            t
            for t in workflow.get_tasks(state=TaskState.READY, manual=True)
            if t.task_spec.bpmn_id in self.definition.info.user_tasks
        ]

    def _run(
        self,
        workflow: BpmnWorkflow,
        events: list,
        act: Callable[[], Any],
        *,
        fresh: bool = False,
        exclude: set | None = None,
        retrying: Any = None,
    ) -> Outcome:
        # The open user tasks before the step, by id, with what names them (a task the step removed from the tree,
        # such as an instance of a multi-instance task that an interrupting event cut short, is gone afterwards).
        named_before = (
            {} if fresh else {t.id: (t.task_spec.bpmn_id, self._task_name(t)) for t in self._ready_user_tasks(workflow)}
        )
        ready_before = set(named_before)
        failed_before = {t.id for t in self._errored_service_tasks(workflow)} - {retrying}
        was_completed = workflow.completed
        happened: list[tuple[str, Any]] = []  # ("completed", task) and ("cycle", timer task), in order
        skip = exclude or set()
        protected_before = self._protected(workflow)
        budget = _StepBudget(self.max_steps, self.time_budget)

        def did_complete(task):
            budget.spend(task)
            if task.id not in skip:
                happened.append(("completed", task))

        with engine_clock.using(self.clock), spiff_patches.observing_cycles(lambda t: happened.append(("cycle", t))):
            step: Callable[[], Any] = act
            for _ in range(MAX_ROUNDS):
                try:
                    since = len(happened)
                    step()
                    self._engine_steps(workflow, did_complete, happened, since)
                    break
                except Exception as exc:
                    failed = [t for t in self._errored_service_tasks(workflow) if t.id not in failed_before]
                    if not failed and isinstance(exc, EngineError):
                        raise
                    if not failed:
                        raise self._engine_failure(exc) from exc
                    for task in failed:  # the failing task stays in ERROR; the other branches run on
                        failed_before.add(task.id)
                        happened.append(("failed", (task, exc)))
                    step = _nothing
        for kind, item in happened:
            if kind == "completed":
                events.extend(self._events_for_completed(workflow, item))
            elif kind == "cycle":
                events.extend(self._timer_fired(item.task_spec.bpmn_id, workflow))
            else:
                events.append(self._incident(*item))
        ready_after = self._ready_user_tasks(workflow)
        after_ids = {t.id for t in ready_after}
        for task_id in ready_before - after_ids:
            task = workflow.tasks.get(task_id) or _in_subprocesses(workflow, task_id)
            if task is None or task.state == TaskState.CANCELLED:
                activity_id, name = named_before[task_id]
                events.append(ev.TaskCancelled(task_id=str(task_id), activity_id=activity_id, name=name))
        for task in ready_after:
            if task.id not in ready_before:
                info = self.definition.info.user_tasks[task.task_spec.bpmn_id]
                events.append(
                    ev.TaskReady(task_id=str(task.id), activity_id=info.activity_id, name=info.name, role=info.role)
                )
        if workflow.completed and not was_completed:
            end_ids = [
                t.task_spec.bpmn_id for kind, t in happened if kind == "completed" and isinstance(t.task_spec, EndEvent)
            ]
            events.append(ev.ProcessCompleted(end_activity_id=end_ids[-1] if end_ids else None))
        if self.compact_above is not None and not workflow.completed:
            removed = compaction.compact(workflow, self.compact_above)
            if removed:
                events.append(ev.HistoryCompacted(removed=removed, kept=len(workflow.tasks)))
        outcome = self._outcome(workflow, events)
        self._check_data(outcome.data, protected_before)
        return outcome

    def _protected(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        """The protected keys' values in the instance's data now (only the keys that are set)."""
        if not self.protected_keys:
            return {}
        data = process_data(workflow)
        return {key: data[key] for key in self.protected_keys if key in data}

    def _check_data(self, data: Mapping[str, Any], protected_before: Mapping[str, Any]) -> None:
        """Refuse process data that cannot be stored, or that changed a protected key."""
        try:
            check_value(dict(data), self.data_limits, where="data", extra_leaves=ENGINE_LEAVES)
        except ValueRejected as exc:
            raise ProcessDataRejected(
                f"The step would leave process data that cannot be stored: {exc.message}", details=exc.details
            ) from None
        changed = sorted(
            key
            for key, value in protected_before.items()
            if data.get(key, _ABSENT) != value
            and (self.server_value is None or data.get(key, _ABSENT) != self.server_value(key))
        )
        if changed:
            raise ProcessDataRejected(
                f"The step would change {', '.join(changed)}, which the server set and no step may change.",
                details={"fields": {key: "protected" for key in changed}},
            )

    @staticmethod
    def _engine_steps(workflow: BpmnWorkflow, did_complete: Callable, happened: list, since: int) -> None:
        """Run engine steps until only people, messages and future timers are left.

        SpiffWorkflow refreshes timers after its last step, so a timer found due there is ready (or marked
        fired) but not run yet, and a cycle advances one occurrence per refresh: go round again until
        nothing engine-side is ready, nothing is marked fired and no cycle fired in the last round.
        """
        for _ in range(MAX_ROUNDS):
            workflow.do_engine_steps(did_complete_task=did_complete)
            cycled = any(kind == "cycle" for kind, _item in happened[since:])
            since = len(happened)
            pending = any(not t.task_spec.manual for t in workflow.get_tasks(state=TaskState.READY))
            fired = any(
                t.state == TaskState.WAITING and t._get_internal_data("event_fired")
                for t in workflow.event_manager.tasks.values()
            )
            if not (cycled or pending or fired):
                return

    @staticmethod
    def _errored_service_tasks(workflow: BpmnWorkflow) -> list:
        return [t for t in workflow.get_tasks(state=TaskState.ERROR) if isinstance(t.task_spec, ServiceTask)]

    def _incident(self, task, exc: BaseException) -> IncidentOpened:
        """Describe a failed service task, keeping the operator's own error message."""
        cause: BaseException = exc
        while cause.__cause__ is not None and isinstance(cause, EngineError):
            cause = cause.__cause__
        spec = task.task_spec
        message = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        return IncidentOpened(
            task_id=str(task.id),
            activity_id=spec.bpmn_id,
            name=self._task_name(task),
            operator=spec.operation_name,
            error_type=type(cause).__name__,
            message=message,
            retries=spec.retries,
            retry_backoff_base=spec.retry_backoff_base,
        )

    def _engine_failure(self, exc: Exception) -> EngineError:
        """Turn whatever SpiffWorkflow raised into an engine error that keeps the original message."""
        cause: BaseException = exc
        while isinstance(getattr(cause, "exception", None), BaseException) and cause is not cause.exception:  # type: ignore[attr-defined]
            cause = cause.exception  # type: ignore[attr-defined]
        if isinstance(cause, EngineError):
            return cause
        task = getattr(exc, "task", None)
        element_id = getattr(getattr(task, "task_spec", None), "bpmn_id", None)
        if isinstance(getattr(task, "task_spec", None), ServiceTask):
            return ServiceCallFailed(f"Service task {element_id} failed: {cause}", element_id=element_id)
        return ScriptFailed(f"{type(cause).__name__}: {cause}", element_id=element_id)

    def _events_for_completed(self, workflow: BpmnWorkflow, task) -> list[ev.DomainEvent]:
        spec = task.task_spec
        bpmn_id = getattr(spec, "bpmn_id", None)
        if bpmn_id is None:
            return []
        info = self.definition.info.activities.get(bpmn_id)
        name = self._task_name(task)
        out: list[ev.DomainEvent] = [
            ev.ActivityCompleted(activity_id=bpmn_id, name=name, kind=info.kind if info else type(spec).__name__)
        ]
        definition = getattr(spec, "event_definition", None)
        if isinstance(definition, MultipleEventDefinition):  # an event-based gateway: the event that came first
            seen = [event.event_definition for event in task.internal_data.get("seen_events", [])]
            for event_id, inner in _gateway_events(spec):
                if any(inner == other for other in seen[:1]):
                    if isinstance(inner, TimerEventDefinition):
                        out.extend(self._timer_fired(event_id, workflow))
                    elif isinstance(inner, MessageEventDefinition):
                        out.append(ev.MessageReceived(name=inner.name, activity_id=event_id))
        elif isinstance(definition, TimerEventDefinition):
            if not _reports_occurrences(spec):  # a repeating cycle reported each occurrence as it fired
                out.extend(self._timer_fired(bpmn_id, workflow))
        elif isinstance(definition, MessageEventDefinition):
            out.append(ev.MessageReceived(name=definition.name, activity_id=bpmn_id))
        if isinstance(spec, ServiceTask):
            out.append(ev.ServiceCalled(activity_id=bpmn_id, operator=spec.operation_name))
        return out

    def _timer_fired(self, bpmn_id: str, workflow: BpmnWorkflow) -> list[ev.DomainEvent]:
        """``timer.fired``, and ``task.escalated`` when a non-interrupting boundary timer found its task open."""
        info = self.definition.info.activities.get(bpmn_id)
        attached_to = info.attached_to if info else None
        name = (info.name if info else None) or bpmn_id
        out: list[ev.DomainEvent] = [ev.TimerFired(activity_id=bpmn_id, name=name, attached_to=attached_to)]
        if attached_to and info is not None and not info.interrupting:
            host = self.definition.info.activities.get(attached_to)
            out.append(
                ev.TaskEscalated(
                    activity_id=bpmn_id,
                    name=name,
                    late_activity_id=attached_to,
                    late_activity_name=host.name if host else attached_to,
                    role=self._role_to_wake(workflow, attached_to),
                )
            )
        return out

    def _role_to_wake(self, workflow: BpmnWorkflow, activity_id: str) -> str | None:
        """Who holds a late activity: a user task's role, else its lane's, else that of the work open inside it."""
        user_task = self.definition.info.user_tasks.get(activity_id)
        if user_task:
            return user_task.role
        role = _lane_role(self._task_spec(activity_id))
        if role:
            return role
        for task in self._ready_user_tasks(workflow):
            if activity_id in self._enclosing(workflow, task):
                return self.definition.info.user_tasks[task.task_spec.bpmn_id].role
        return None

    def _task_spec(self, bpmn_id: str):
        for spec in (self.definition.spec, *self.definition.subprocess_specs.values()):
            for task_spec in spec.task_specs.values():
                if getattr(task_spec, "bpmn_id", None) == bpmn_id:
                    return task_spec
        return None

    @staticmethod
    def _enclosing(workflow: BpmnWorkflow, task) -> list[str]:
        """The activity ids of the subprocesses ``task`` runs inside, innermost first."""
        out = []
        sub = task.workflow
        while sub is not workflow and sub.parent_task_id is not None:
            host = workflow.get_task_from_id(sub.parent_task_id)
            if host is None:
                break
            out.append(host.task_spec.bpmn_id)
            sub = host.workflow
        return out

    def _waits(self, workflow: BpmnWorkflow) -> list[Wait]:
        waits = []
        for task in list(workflow.event_manager.tasks.values()):
            if task.state != TaskState.WAITING:
                continue
            spec = task.task_spec
            definition = spec.event_definition
            info = self.definition.info.activities.get(spec.bpmn_id)
            attached_to = info.attached_to if info else None
            if isinstance(definition, TimerEventDefinition):
                waits.append(
                    Wait(
                        "timer", spec.bpmn_id, name=self._task_name(task), due_at=due_at(task), attached_to=attached_to
                    )
                )
            elif isinstance(definition, MessageEventDefinition):
                waits.append(Wait("message", spec.bpmn_id, name=definition.name, attached_to=attached_to))
            elif isinstance(definition, MultipleEventDefinition):
                waits.extend(self._gateway_waits(task))
        waits.sort(key=lambda w: (w.type, w.due_at or datetime.max.replace(tzinfo=UTC), w.activity_id))
        return waits

    def _gateway_waits(self, task) -> list[Wait]:
        """What an event-based gateway waits for: each event after it, named by that event's own element."""
        waits = []
        for event_id, definition in _gateway_events(task.task_spec):
            if isinstance(definition, TimerEventDefinition):
                info = self.definition.info.activities.get(event_id)
                waits.append(
                    Wait("timer", event_id, name=(info.name if info else None) or event_id, due_at=due_at(task))
                )
            elif isinstance(definition, MessageEventDefinition):
                waits.append(Wait("message", event_id, name=definition.name))
        return waits

    def _outcome(self, workflow: BpmnWorkflow, events: list[ev.DomainEvent]) -> Outcome:
        waits = self._waits(workflow)
        due_by_host: dict[str, datetime] = {}
        for wait in waits:
            if wait.type == "timer" and wait.attached_to and wait.due_at:
                current = due_by_host.get(wait.attached_to)
                due_by_host[wait.attached_to] = min(current, wait.due_at) if current else wait.due_at
        ready = []
        for task in self._ready_user_tasks(workflow):
            info = self.definition.info.user_tasks[task.task_spec.bpmn_id]
            dues = [due_by_host[h] for h in [info.activity_id, *self._enclosing(workflow, task)] if h in due_by_host]
            ready.append(
                ReadyTask(
                    task_id=str(task.id),
                    activity_id=info.activity_id,
                    name=info.name,
                    role=info.role,
                    form=info.form,
                    ui_form=info.ui_form,
                    instructions=info.instructions,
                    signature=info.signature,
                    due_at=min(dues) if dues else None,
                    party=info.party,
                    instance=instance_of(task),
                )
            )
        activities = [t.activity_id for t in ready]
        for wait in waits:
            host = wait.attached_to or wait.activity_id
            if host not in activities:
                activities.append(host)
        failed = [
            FailedTask(task_id=str(t.id), activity_id=t.task_spec.bpmn_id, name=self._task_name(t))
            for t in self._errored_service_tasks(workflow)
        ]
        for task in failed:
            if task.activity_id not in activities:
                activities.append(task.activity_id)
        return Outcome(
            state=self._save(workflow),
            events=events,
            ready_tasks=ready,
            waiting_for=waits,
            completed=workflow.completed,
            data=process_data(workflow),
            current_activities=activities,
            failed_tasks=failed,
        )


class _StepBudget:
    """Counts the elements one command completes and the time it takes; past either limit the command stops.

    The time is the CPU time of the thread running the command (``time.thread_time``): a diagram that loops burns
    it, while a busy machine that makes the command wait for a core, a script worker or a service does not stop
    it. Wall time ``BUDGET_WALL_FACTOR`` times longer stays as a backstop."""

    def __init__(self, max_steps: int, seconds: float):
        self.max_steps, self.seconds = max_steps, seconds
        self.steps = 0
        self.cpu_started, self.wall_started = time.thread_time(), time.monotonic()

    def spend(self, task) -> None:
        """Count one completed element; raise ``StepBudgetExceeded`` when the budget is spent."""
        self.steps += 1
        cpu = time.thread_time() - self.cpu_started
        wall = time.monotonic() - self.wall_started
        if self.steps <= self.max_steps and cpu <= self.seconds and wall <= self.seconds * BUDGET_WALL_FACTOR:
            return
        element_id = getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name
        if self.steps > self.max_steps:
            limit = f"{self.max_steps} steps"
        elif cpu > self.seconds:
            limit = f"{self.seconds:g} seconds of CPU time"
        else:
            limit = f"{self.seconds * BUDGET_WALL_FACTOR:g} seconds"
        raise StepBudgetExceeded(
            f"The process ran past its limit of {limit} without reaching a wait state (last at {element_id}): "
            "the diagram probably loops. The step was undone.",
            element_id=element_id,
            details={"steps": self.steps, "cpu_seconds": round(cpu, 3), "seconds": round(wall, 3)},
        )


def _gateway_events(task_spec) -> list[tuple[str, Any]]:
    """The events an event-based gateway waits for, each with the id of its element (SpiffWorkflow keeps their
    definitions on the gateway, in the order of its outgoing flows)."""
    definitions = task_spec.event_definition.event_definitions
    return [
        (getattr(out, "bpmn_id", None) or out.name, d) for out, d in zip(task_spec.outputs, definitions, strict=False)
    ]


def _in_subprocesses(workflow: BpmnWorkflow, task_id):
    """The task ``task_id`` inside one of the instance's subprocesses, or None when it is no longer anywhere."""
    for sub in workflow.subprocesses.values():
        if task_id in sub.tasks:
            return sub.tasks[task_id]
    return None


def instance_of(task) -> Instance | None:
    """Which instance of a multi-instance or loop task ``task`` is (or runs inside, for a task of a multi-instance
    subprocess), with the item it works on; None for a task that is in no instance."""
    from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import MultiInstanceTask

    instance = instance_host(task)
    if instance is None:
        return None
    parent, host = instance.parent, instance.parent.task_spec
    siblings = [c for c in parent.children if c.task_spec is instance.task_spec]
    index = siblings.index(instance)
    if not isinstance(host, MultiInstanceTask):
        return Instance(index=instance.internal_data.get("iteration", index), count=host.maximum)
    count = parent.internal_data.get("cardinality")
    if count is None and host.data_input is not None and host.data_input.exists(parent):
        count = len(host.data_input.get(parent))
    elif count is None and host.data_input is None:
        count = len(siblings)
    variable = host.input_item.bpmn_id if host.input_item is not None else None
    item = instance.data.get(variable) if variable else None
    return Instance(index=index, count=count, variable=variable, item=item)


def _make_ready_again(task) -> None:
    """Put a failed task back to READY with the data it had when it first became ready.

    Only the task itself is touched: resetting its branch (``reset_from_task_id``) would also re-arm the
    boundary timers of the task or of the subprocess around it, and so move their deadlines.
    """
    if task.parent is not None:
        task.data = copy.deepcopy(task.parent.data)
    task._set_state(TaskState.READY)


def _holds(container: Any, key: str | int) -> bool:
    """Whether ``container`` (a dict or a list) has ``key``."""
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container)


def _nothing() -> None:
    """An act that does nothing (engine steps only)."""


def _reports_occurrences(task_spec) -> bool:
    """Whether a timer repeats (a cycle that is not on an interrupting boundary event)."""
    return isinstance(task_spec.event_definition, CycleTimerEventDefinition) and not getattr(
        task_spec, "cancel_activity", False
    )


def _lane_role(task_spec) -> str | None:
    """The role a task spec's lane names, if it names one."""
    from .definition import TASK_ROLES

    lane = (getattr(task_spec, "lane", None) or "").strip().lower().replace(" ", "_")
    return lane if lane in TASK_ROLES else None
