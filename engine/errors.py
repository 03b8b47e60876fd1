"""The engine's exceptions: one base class, a small hierarchy, context on every error."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "engine_error"

    def __init__(
        self, message: str, *, element_id: str | None = None, line: int | None = None, details: dict | None = None
    ):
        super().__init__(message)
        self.message = message
        self.element_id = element_id
        self.line = line
        self.details = dict(details or {})

    def as_details(self) -> dict:
        """The error's context as a JSON-ready mapping (element id, line and any extra details)."""
        out = dict(self.details)
        if self.element_id is not None:
            out["element_id"] = self.element_id
        if self.line is not None:
            out["line"] = self.line
        return out

    def __str__(self) -> str:
        where = []
        if self.element_id:
            where.append(f"element {self.element_id}")
        if self.line:
            where.append(f"line {self.line}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class DefinitionInvalid(EngineError):
    """An uploaded definition cannot be deployed: not BPMN, not well-formed, unsafe or not executable."""

    code = "invalid_definition"


class UnsafeCode(DefinitionInvalid):
    """An expression or script uses a construct the sandbox refuses (imports, dunder access, ...)."""

    code = "unsafe_expression"


class ScriptFailed(EngineError):
    """An expression or script raised, ran too long, or broke a sandbox rule while running."""

    code = "script_failed"


class ServiceCallFailed(EngineError):
    """A service task's operator failed; the original error is kept as ``__cause__`` and in the message."""

    code = "service_failed"


class TaskNotReady(EngineError):
    """A command named a user task that is not READY (completed, cancelled or unknown)."""

    code = "task_not_ready"


class NotWaiting(EngineError):
    """A message was delivered to an instance that waits for no message of that name."""

    code = "not_waiting"


class NotMigratable(EngineError):
    """An instance cannot move to another version: an open activity has no counterpart there (map it), or a
    map names an activity that does not exist."""

    code = "not_migratable"


class StateCorrupt(EngineError):
    """A stored instance state cannot be restored with its definition."""

    code = "state_corrupt"


class StepBudgetExceeded(EngineError):
    """A command ran more engine steps, or longer, than its budget allows: the diagram probably loops.

    Nothing of the command is kept. ``details`` holds ``steps``, ``cpu_seconds`` and ``seconds`` (wall time);
    ``element_id`` is the last element that completed (where the loop was). For a start, ``initial_state`` is the
    instance as it was created, before any step ran.
    """

    code = "step_budget_exceeded"

    def __init__(self, message: str, *, initial_state: dict | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.initial_state = initial_state


class ProcessDataRejected(EngineError):
    """A step would write process data that cannot be stored: too large, not storable as JSON, or a change
    to a protected key (``coi``, ``patient_reference``, ...). Nothing of the step is kept."""

    code = "process_data_rejected"
