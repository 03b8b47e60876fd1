"""The few places where SpiffWorkflow 3.2's defaults are wrong for Tether, corrected in one module.

- Timers read ``datetime.now()`` directly: they are pointed at the engine's injectable clock.
- A naive timer date is taken as server-local time: here it is UTC, whatever the server's zone.
- Task queries stop at ``max_depth=1000``, so a diagram that loops long enough stalls silently
  (its READY tasks are no longer found): the depth limit is lifted.
- A cycle timer (``R3/PT1H``) fires by adding a branch while its own task keeps waiting, so no task
  completes and nothing reports the firing: each occurrence is announced to the listener installed
  with ``observing_cycles``. On an interrupting boundary event a cycle never interrupted its activity:
  there, as BPMN says, the first occurrence fires the event once, like a date.
- A parallel multi-instance task collects its outputs in the order its instances complete: here they follow the
  order of the items (or of the instances, for a cardinality), whatever order people complete them in.
- A multi-instance task whose collection (``loopDataInputRef``) is not in the process data, or is no list or
  map, fails with a bare ``TypeError``: it fails with a message naming the task and the collection.

``apply()`` is idempotent and is called by the runtime and the loader before they touch SpiffWorkflow.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from datetime import UTC

_applied = False
_cycle_listener: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("tether_cycle_listener", default=None)


@contextlib.contextmanager
def observing_cycles(listener: Callable) -> Iterator[None]:
    """Call ``listener(task)`` for each occurrence of a cycle timer that fires in the enclosed engine steps."""
    token = _cycle_listener.set(listener)
    try:
        yield
    finally:
        _cycle_listener.reset(token)


def _announce_cycles(cycle_complete):
    """Wrap ``CycleTimerEventDefinition.cycle_complete`` so that every occurrence that fires is announced."""

    def announcing(self, my_task):
        fired = cycle_complete(self, my_task)
        if fired and getattr(my_task.task_spec, "cancel_activity", False):
            my_task._set_internal_data(event_fired=True)  # the event completes, and so interrupts, as well
            return fired
        listener = _cycle_listener.get()
        if fired and listener is not None:
            listener(my_task)
        return fired

    announcing.__doc__ = cycle_complete.__doc__
    return announcing


def _check_collection(update_hook):
    """Wrap a multi-instance task's ``_update_hook`` so that a missing or unusable collection is named."""

    def checking(self, my_task):
        from .errors import ScriptFailed

        data_input = self.data_input
        if data_input is not None:
            name = data_input.bpmn_id
            data = my_task.data if name in my_task.data or my_task.parent is None else my_task.parent.data
            value = data.get(name)
            if not isinstance(value, list | dict):
                found = "is not in the process data" if value is None else f"is a {type(value).__name__}"
                raise ScriptFailed(
                    f"The multi-instance task {self.bpmn_id} runs once per item of '{data_input.bpmn_id}' (its "
                    f"loopDataInputRef), which {found}: set it to a list (or a map) before the task is reached.",
                    element_id=self.bpmn_id,
                )
        return update_hook(self, my_task)

    checking.__doc__ = update_hook.__doc__
    return checking


def _collect_in_item_order(merge_child):
    """Wrap ``ParallelMultiInstanceTask.merge_child`` so that an output list follows the order of the items."""

    def merging(self, workflow, child):
        my_task = child.parent
        key = child.internal_data.get("key_or_index")
        output = (
            self.data_output.get(my_task) if self.data_output is not None and self.data_output.exists(my_task) else None
        )
        data_input = self.data_input.get(my_task) if self.data_input is not None else None
        ordered = isinstance(key, int) and isinstance(output, list) and data_input is not output
        before = len(output) if ordered else 0
        merge_child(self, workflow, child)
        if ordered and len(output) == before + 1:
            positions = [*my_task.internal_data.get("output_positions", []), key]
            order = sorted(range(len(positions)), key=positions.__getitem__)
            output[:] = [output[i] for i in order]
            my_task.internal_data["output_positions"] = sorted(positions)

    merging.__doc__ = merge_child.__doc__
    return merging


def _lift_depth_limit(init) -> None:
    """Replace the default ``max_depth`` of a task iterator's ``__init__`` with no practical limit."""
    names = init.__code__.co_varnames[1 : init.__code__.co_argcount]
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
    from SpiffWorkflow.bpmn.specs.mixins import multiinstance_task
    from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
    from SpiffWorkflow.util.task import TaskIterator

    from .clock import ClockedDatetime

    timer.datetime = ClockedDatetime  # type: ignore[attr-defined,misc]
    timer.LOCALTZ = UTC  # type: ignore[attr-defined]
    timer.CycleTimerEventDefinition.cycle_complete = _announce_cycles(  # type: ignore[method-assign]
        timer.CycleTimerEventDefinition.cycle_complete
    )
    for mi_class in (multiinstance_task.ParallelMultiInstanceTask, multiinstance_task.SequentialMultiInstanceTask):
        mi_class._update_hook = _check_collection(mi_class._update_hook)  # type: ignore[method-assign]
    parallel = multiinstance_task.ParallelMultiInstanceTask
    parallel.merge_child = _collect_in_item_order(parallel.merge_child)  # type: ignore[method-assign]
    _lift_depth_limit(TaskIterator.__init__)
    _lift_depth_limit(BpmnTaskIterator.__init__)
    _applied = True
