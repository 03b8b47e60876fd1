"""The few places where SpiffWorkflow 3.2's defaults are wrong for Tether, corrected in one module.

- Timers read ``datetime.now()`` directly: they are pointed at the engine's injectable clock.
- A naive timer date is taken as server-local time: here it is UTC, whatever the server's zone.
- Task queries stop at ``max_depth=1000``, so a diagram that loops long enough stalls silently
  (its READY tasks are no longer found): the depth limit is lifted.

``apply()`` is idempotent and is called by the runtime and the loader before they touch SpiffWorkflow.
"""

from __future__ import annotations

import sys
from datetime import UTC

_applied = False


def _lift_depth_limit(init) -> None:
    """Replace the default ``max_depth`` of a task iterator's ``__init__`` with no practical limit."""
    names = init.__code__.co_varnames[1:init.__code__.co_argcount]
    defaults = list(init.__defaults__)
    offset = len(names) - len(defaults)
    defaults[names.index("max_depth") - offset] = sys.maxsize
    init.__defaults__ = tuple(defaults)


def apply() -> None:
    """Install the corrections once per process."""
    global _applied
    if _applied:
        return
    from SpiffWorkflow.bpmn.specs.event_definitions import timer
    from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
    from SpiffWorkflow.util.task import TaskIterator

    from .clock import ClockedDatetime

    timer.datetime = ClockedDatetime  # type: ignore[attr-defined,misc]
    timer.LOCALTZ = UTC  # type: ignore[attr-defined]
    _lift_depth_limit(TaskIterator.__init__)
    _lift_depth_limit(BpmnTaskIterator.__init__)
    _applied = True
