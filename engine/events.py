"""Domain events the engine reports after each command; the server turns them into audit entries,
outbox rows, alerts and timer schedules. Frozen dataclasses, named subject + past-tense verb."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class DomainEvent:
    """Base class: every event can describe itself as a type name and a JSON-ready payload."""

    type = "event"

    def payload(self) -> dict[str, Any]:
        """The event's fields, JSON-ready."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


@dataclass(frozen=True)
class ProcessStarted(DomainEvent):
    type = "therapy.started"
    process_key: str


@dataclass(frozen=True)
class ActivityCompleted(DomainEvent):
    """A flow element (gateway, event, task) finished; the timeline is built from these."""

    type = "activity.completed"
    activity_id: str
    name: str
    kind: str


@dataclass(frozen=True)
class TaskReady(DomainEvent):
    type = "task.ready"
    task_id: str
    activity_id: str
    name: str
    role: str


@dataclass(frozen=True)
class TaskCompleted(DomainEvent):
    type = "task.completed"
    task_id: str
    activity_id: str
    name: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskCancelled(DomainEvent):
    """A READY user task was withdrawn (an interrupting boundary event, or the therapy ended)."""

    type = "task.cancelled"
    task_id: str
    activity_id: str
    name: str


@dataclass(frozen=True)
class TimerFired(DomainEvent):
    type = "timer.fired"
    activity_id: str
    name: str
    attached_to: str | None = None


@dataclass(frozen=True)
class TaskEscalated(DomainEvent):
    """A non-interrupting boundary timer fired on a task that is still open: it is late."""

    type = "task.escalated"
    activity_id: str
    name: str
    late_activity_id: str
    late_activity_name: str
    role: str | None


@dataclass(frozen=True)
class MessageReceived(DomainEvent):
    type = "message.received"
    name: str
    activity_id: str


@dataclass(frozen=True)
class ServiceCalled(DomainEvent):
    type = "service.called"
    activity_id: str
    operator: str


@dataclass(frozen=True)
class ProcessCompleted(DomainEvent):
    type = "therapy.completed"
    end_activity_id: str | None = None


@dataclass(frozen=True)
class ProcessCancelled(DomainEvent):
    type = "therapy.cancelled"
    reason: str = ""
    reason_code: str = ""


@dataclass(frozen=True)
class HistoryCompacted(DomainEvent):
    """Finished history was cut out of the engine state (``engine.compaction``); each step is in the trail."""

    type = "history.compacted"
    removed: int
    kept: int
