"""Running one instance of a definition: each command restores the state, acts, runs the engine to its
next wait state, and reports what happened.

A command never writes anywhere; the caller stores ``Outcome.state`` and acts on ``Outcome.events``
(audit, webhooks, timer scheduling) in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.events.end_event import EndEvent
from SpiffWorkflow.bpmn.util.event import BpmnEvent
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.specs.defaults import ServiceTask
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition as SpiffMessageEventDefinition
from SpiffWorkflow.util.task import TaskState

from . import clock as engine_clock
from . import events as ev
from . import spiff_patches
from .definition import Definition
from .errors import EngineError, NotWaiting, ScriptFailed, ServiceCallFailed, TaskNotReady
from .serialization import state_from_dict, state_to_dict

ServiceCaller = Callable[[str, dict, dict], Any]


@dataclass(frozen=True)
class ReadyTask:
    """A user task waiting for a person."""

    task_id: str
    activity_id: str
    name: str
    role: str
    form: str | None
    ui_form: str | None
    instructions: str | None
    signature: str | None
    due_at: datetime | None


@dataclass(frozen=True)
class Wait:
    """Something the instance waits for: a timer (with its due time) or a message (with its name)."""

    type: str
    activity_id: str
    name: str | None = None
    due_at: datetime | None = None
    attached_to: str | None = None

    def to_dict(self) -> dict:
        """The API's shape of a wait."""
        out: dict[str, Any] = {"type": self.type, "activity_id": self.activity_id}
        if self.type == "timer":
            out["due_at"] = self.due_at.isoformat().replace("+00:00", "Z") if self.due_at else None
        else:
            out["name"] = self.name
        if self.attached_to:
            out["attached_to"] = self.attached_to
        return out


@dataclass
class Outcome:
    """What a command left behind."""

    state: dict
    events: list[ev.DomainEvent] = field(default_factory=list)
    ready_tasks: list[ReadyTask] = field(default_factory=list)
    waiting_for: list[Wait] = field(default_factory=list)
    completed: bool = False
    data: dict = field(default_factory=dict)
    current_activities: list[str] = field(default_factory=list)

    @property
    def next_due(self) -> datetime | None:
        """When the earliest armed timer is due, if any."""
        dues = [w.due_at for w in self.waiting_for if w.type == "timer" and w.due_at is not None]
        return min(dues) if dues else None


class Runtime:
    """Runs commands against instances of one definition."""

    def __init__(self, definition: Definition, *, clock: engine_clock.Clock = engine_clock.system_clock,
                 service_caller: ServiceCaller | None = None, time_limit: float = 1.0):
        spiff_patches.apply()
        self.definition = definition
        self.clock = clock
        self.service_caller = service_caller
        self.time_limit = time_limit

    # -- commands -------------------------------------------------------------------------------
    def start(self, data: Mapping[str, Any] | None = None) -> Outcome:
        """Create an instance with ``data`` as its initial process data and run it to its first wait."""
        workflow = BpmnWorkflow(self.definition.spec, self.definition.subprocess_specs,
                                script_engine=self._script_engine())
        start_task = workflow.task_tree
        start_task.data.update(dict(data or {}))
        events: list[ev.DomainEvent] = [ev.ProcessStarted(process_key=self.definition.info.key)]
        return self._run(workflow, events, lambda: None, fresh=True)

    def complete_task(self, state: Mapping, task_id: str, data: Mapping[str, Any] | None = None) -> Outcome:
        """Complete the READY user task ``task_id`` with form ``data``."""
        workflow = self._restore(state)
        task = self._find_task(workflow, task_id)
        if task is None or task.state != TaskState.READY or not task.task_spec.manual:
            raise TaskNotReady(f"Task {task_id} is not ready to be completed.", details={"task_id": task_id})
        info = self.definition.info.user_tasks.get(task.task_spec.bpmn_id)
        events: list[ev.DomainEvent] = []

        def act():
            task.data.update(dict(data or {}))
            task.run()
            events.append(ev.TaskCompleted(task_id=str(task.id), activity_id=task.task_spec.bpmn_id,
                                           name=info.name if info else task.task_spec.bpmn_name or "",
                                           data=dict(data or {})))

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

    def cancel(self, state: Mapping, reason: str = "") -> Outcome:
        """End the instance: every open task is cancelled."""
        workflow = self._restore(state)
        before = self._ready_user_tasks(workflow)
        with engine_clock.using(self.clock):
            workflow.cancel()
        events: list[ev.DomainEvent] = [
            ev.TaskCancelled(task_id=str(t.id), activity_id=t.task_spec.bpmn_id, name=self._task_name(t))
            for t in before]
        events.append(ev.ProcessCancelled(reason=reason))
        return self._outcome(workflow, events)

    def inspect(self, state: Mapping) -> Outcome:
        """Describe an instance without changing it."""
        return self._outcome(self._restore(state), [])

    # -- internals ------------------------------------------------------------------------------
    def _script_engine(self):
        from .sandbox import SandboxScriptEngine
        return SandboxScriptEngine(service_caller=self.service_caller, time_limit=self.time_limit)

    def _restore(self, state: Mapping) -> BpmnWorkflow:
        return state_from_dict(state, self.definition.spec, self.definition.subprocess_specs,
                               self._script_engine())

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
        return [t for t in workflow.get_tasks(state=TaskState.READY, manual=True)
                if t.task_spec.bpmn_id in self.definition.info.user_tasks]

    def _run(self, workflow: BpmnWorkflow, events: list, act: Callable[[], Any], *, fresh: bool = False,
             exclude: set | None = None) -> Outcome:
        ready_before = set() if fresh else {t.id for t in self._ready_user_tasks(workflow)}
        was_completed = workflow.completed
        completed_tasks: list = []
        skip = exclude or set()

        def did_complete(task):
            if task.id not in skip:
                completed_tasks.append(task)

        with engine_clock.using(self.clock):
            try:
                act()
                workflow.do_engine_steps(did_complete_task=did_complete)
            except EngineError:
                raise
            except Exception as exc:
                raise self._engine_failure(exc) from exc
        for task in completed_tasks:
            events.extend(self._events_for_completed(workflow, task))
        ready_after = self._ready_user_tasks(workflow)
        after_ids = {t.id for t in ready_after}
        for task_id in ready_before - after_ids:
            task = workflow.get_task_from_id(task_id)
            if task is not None and task.state == TaskState.CANCELLED:
                events.append(ev.TaskCancelled(task_id=str(task.id), activity_id=task.task_spec.bpmn_id,
                                               name=self._task_name(task)))
        for task in ready_after:
            if task.id not in ready_before:
                info = self.definition.info.user_tasks[task.task_spec.bpmn_id]
                events.append(ev.TaskReady(task_id=str(task.id), activity_id=info.activity_id, name=info.name,
                                           role=info.role))
        if workflow.completed and not was_completed:
            end_ids = [t.task_spec.bpmn_id for t in completed_tasks if isinstance(t.task_spec, EndEvent)]
            events.append(ev.ProcessCompleted(end_activity_id=end_ids[-1] if end_ids else None))
        return self._outcome(workflow, events)

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
        out: list[ev.DomainEvent] = [ev.ActivityCompleted(activity_id=bpmn_id, name=name,
                                                          kind=info.kind if info else type(spec).__name__)]
        definition = getattr(spec, "event_definition", None)
        attached_to = info.attached_to if info else None
        if isinstance(definition, TimerEventDefinition):
            out.append(ev.TimerFired(activity_id=bpmn_id, name=name, attached_to=attached_to))
            if attached_to and info is not None and not info.interrupting:
                host = self.definition.info.activities.get(attached_to)
                user_task = self.definition.info.user_tasks.get(attached_to)
                out.append(ev.TaskEscalated(
                    activity_id=bpmn_id, name=name, late_activity_id=attached_to,
                    late_activity_name=host.name if host else attached_to,
                    role=user_task.role if user_task else self._lane_role_of(attached_to)))
        elif isinstance(definition, MessageEventDefinition):
            out.append(ev.MessageReceived(name=definition.name, activity_id=bpmn_id))
        if isinstance(spec, ServiceTask):
            out.append(ev.ServiceCalled(activity_id=bpmn_id, operator=spec.operation_name))
        return out

    def _lane_role_of(self, activity_id: str) -> str | None:
        user_task = self.definition.info.user_tasks.get(activity_id)
        return user_task.role if user_task else None

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
                waits.append(Wait("timer", spec.bpmn_id, name=self._task_name(task),
                                  due_at=_due_at(task), attached_to=attached_to))
            elif isinstance(definition, MessageEventDefinition):
                waits.append(Wait("message", spec.bpmn_id, name=definition.name, attached_to=attached_to))
        waits.sort(key=lambda w: (w.type, w.due_at or datetime.max.replace(tzinfo=UTC), w.activity_id))
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
            ready.append(ReadyTask(
                task_id=str(task.id), activity_id=info.activity_id, name=info.name, role=info.role,
                form=info.form, ui_form=info.ui_form, instructions=info.instructions, signature=info.signature,
                due_at=due_by_host.get(info.activity_id)))
        activities = [t.activity_id for t in ready]
        for wait in waits:
            host = wait.attached_to or wait.activity_id
            if host not in activities:
                activities.append(host)
        return Outcome(state=state_to_dict(workflow), events=events, ready_tasks=ready, waiting_for=waits,
                       completed=workflow.completed, data=_process_data(workflow), current_activities=activities)


def _due_at(task) -> datetime | None:
    value = task._get_internal_data("event_value")
    if value is None:
        return None
    try:
        if isinstance(value, dict):  # a cycle: {'cycles': n, 'next': iso, 'duration': seconds}
            return _aware(datetime.fromisoformat(value["next"])) if value.get("cycles") != 0 else None
        parsed = TimerEventDefinition.parse_time_or_duration(value)
        return _aware(parsed) if isinstance(parsed, datetime) else None
    except (ValueError, TypeError, KeyError):
        return None


def _aware(moment: datetime) -> datetime:
    moment = datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                      moment.microsecond, tzinfo=moment.tzinfo or UTC)
    return moment.astimezone(UTC)


def _process_data(workflow: BpmnWorkflow) -> dict:
    """The instance's current process data: the data of its open tasks, else of its last task."""
    open_tasks = [t for t in workflow.get_tasks(state=TaskState.READY | TaskState.WAITING | TaskState.STARTED)
                  if getattr(t.task_spec, "bpmn_id", None)]
    open_tasks.sort(key=lambda t: t.last_state_change)
    data: dict = {}
    for task in open_tasks:
        data.update(task.data)
    if not data:
        last = workflow.last_task or workflow.task_tree
        data = dict(last.data) if last is not None else {}
    return {k: v for k, v in data.items() if not k.startswith("spiff__")}
