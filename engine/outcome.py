"""What a runtime command reports: the new state, the domain events, the open user tasks, what the
instance waits for (with due times) and the service tasks it is stopped at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState

from . import events as ev


@dataclass(frozen=True)
class IncidentOpened(ev.DomainEvent):
    """A service task failed: the instance stopped at it (the task is in ERROR) and kept everything before it.

    ``message`` is the error as the operator raised it; ``retries`` and ``retry_backoff_base`` come from the
    diagram's ``spiffworkflow:retry`` (None when the diagram says nothing).
    """

    type = "incident.opened"
    task_id: str
    activity_id: str
    name: str
    operator: str | None
    error_type: str
    message: str
    retries: int | None = None
    retry_backoff_base: int | None = None


@dataclass(frozen=True)
class FailedTask:
    """A service task the instance is stopped at, waiting for a retry or for someone to resolve it."""

    task_id: str
    activity_id: str
    name: str


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
    party: str = "treatment"
    # For one instance of a multi-instance or loop task: which one it is and the item it works on (``Instance``).
    instance: Instance | None = None


@dataclass(frozen=True)
class Instance:
    """One instance of a multi-instance (or standard loop) task: its position (from 0), how many instances there
    are when that is known, and, when the task names an ``inputDataItem``, that variable and its value."""

    index: int
    count: int | None = None
    variable: str | None = None
    item: Any = None

    def to_dict(self) -> dict:
        """The API's shape of an instance."""
        return {"index": self.index, "count": self.count, "variable": self.variable, "item": self.item}


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
    failed_tasks: list[FailedTask] = field(default_factory=list)

    @property
    def next_due(self) -> datetime | None:
        """When the earliest armed timer is due, if any."""
        dues = [w.due_at for w in self.waiting_for if w.type == "timer" and w.due_at is not None]
        return min(dues) if dues else None


def due_at(task) -> datetime | None:
    """When a waiting timer task is due (the next occurrence of a cycle), in UTC; None when unknown."""
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
    """A plain ``datetime`` in UTC (a naive one is taken as UTC)."""
    moment = datetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=moment.tzinfo or UTC,
    )
    return moment.astimezone(UTC)


def process_data(workflow: BpmnWorkflow) -> dict:
    """The instance's current process data: the data of its open tasks, else of its last task."""
    open_tasks = [
        t
        for t in workflow.get_tasks(state=TaskState.READY | TaskState.WAITING | TaskState.STARTED)
        if getattr(t.task_spec, "bpmn_id", None) and not _is_instance(t)
    ]
    open_tasks.sort(key=lambda t: t.last_state_change)
    data: dict = {}
    for task in open_tasks:
        data.update(task.data)
    if not data:
        last = workflow.last_task or workflow.task_tree
        data = dict(last.data) if last is not None else {}
    return {k: v for k, v in data.items() if not k.startswith("spiff__")}


def instance_host(task):
    """The instance of a multi-instance or loop task that ``task`` is, or runs inside (a task of a multi-instance
    subprocess): that instance's task, or None. An instance's data holds its own item, not the process's."""
    from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask

    while task is not None:
        parent = task.parent
        if (
            parent is not None
            and isinstance(parent.task_spec, LoopTask)
            and parent.task_spec.task_spec == task.task_spec.name
        ):
            return task
        workflow = task.workflow
        top = getattr(workflow, "top_workflow", None)
        if top is None or top is workflow or getattr(workflow, "parent_task_id", None) is None:
            return None
        task = top.get_task_from_id(workflow.parent_task_id)
    return None


def _is_instance(task) -> bool:
    return instance_host(task) is not None
