"""Keeping long-running instances small: finished history is cut out of SpiffWorkflow's task tree.

SpiffWorkflow keeps every task it ever created: a diagram that loops (a daily check for three years)
grows its tree, its saved state and the time every command takes to restore and save it, without end.
Everything an instance did is already in the audit trail as it happened (``activity.completed``,
``task.completed``, ``timer.fired``), so the engine only needs the part of the tree that can still run.

``compact`` finds the deepest completed task that every unfinished task descends from (the point where
the instance's live branches meet), hangs it directly under the root, and drops every other task (the
finished history above it and the finished branches beside it) with the subprocesses those tasks ran. A
process end event whose join still waits for the other branches is kept, moved under the root. What can
still run, and each task's data (copied down as tasks are created), are untouched.
"""

from __future__ import annotations

from SpiffWorkflow.bpmn.specs.control import _EndJoin
from SpiffWorkflow.util.task import TaskState

# A tree this small is left alone (every bundled journey stays below it from start to end): history is cut
# only from instances that loop.
KEEP_TASKS = 100

# Unfinished for Tether: waiting, ready, running, predicted, and failed service tasks that may be retried.
_LIVE = TaskState.NOT_FINISHED_MASK | TaskState.ERROR


def compact(workflow, keep: int = KEEP_TASKS) -> int:
    """Cut finished history out of ``workflow`` (and its running subprocesses); returns how many tasks went."""
    removed = 0
    for tree in [workflow, *(sp for sp in workflow.subprocesses.values() if not sp.completed)]:
        if len(tree.tasks) > keep:
            removed += _cut(tree, workflow.event_manager)
    if removed:
        _drop_orphaned_subprocesses(workflow)
    return removed


def _cut(tree, event_manager) -> int:
    root = tree.task_tree
    live = [t for t in tree.tasks.values() if t.state & _LIVE]
    # A process's end join waits, under the end event that reached it, for every other branch to end: it
    # must not pin the history above that end event, so it moves up under the root with its end event.
    ending = [t for t in live if isinstance(t.task_spec, _EndJoin)]
    after_end = {t.id for join in ending for t in _subtree(join)}  # the join and what it predicts after it
    running = [t for t in live if t.id not in after_end]
    if not running or root is None:
        return 0
    meeting = _meeting_point(root, running)
    while meeting is not None and meeting.state != TaskState.COMPLETED:
        meeting = meeting.parent
    if meeting is None or meeting is root:
        return 0
    kept = {root.id} | {t.id for t in _subtree(meeting)}
    moved_ends = []
    for join in ending:
        if join.id not in kept and join.parent is not None:
            end_event = join.parent
            kept.update(t.id for t in [end_event, *_subtree(join)])
            moved_ends.append(end_event)
    gone = [task for task in tree.tasks.values() if task.id not in kept]
    if not gone or any(task.state & _LIVE for task in gone):  # live work is never cut (cannot happen: see above)
        return 0
    for task in gone:
        del tree.tasks[task.id]
        event_manager.remove_task(task)
    meeting._parent = root.id
    for end_event in moved_ends:
        end_event._parent, end_event._children = root.id, [c.id for c in end_event.children if c.id in kept]
    root._children = [meeting.id, *(end_event.id for end_event in moved_ends)]
    if tree.last_task is not None and tree.last_task.id not in tree.tasks:
        tree.last_task = meeting
    return len(gone)


def _meeting_point(root, live: list):
    """The deepest task that every task in ``live`` descends from (or is)."""
    path = _ancestry(live[0])  # root first
    index = {task.id: depth for depth, task in enumerate(path)}
    deepest = len(path) - 1
    for task in live[1:]:
        step = task
        while step is not None and step.id not in index:
            step = step.parent
        if step is None:
            return root
        deepest = min(deepest, index[step.id])
    return path[deepest]


def _ancestry(task) -> list:
    out = []
    while task is not None:
        out.append(task)
        task = task.parent
    out.reverse()
    return out


def _subtree(task) -> list:
    out, pending = [], [task]
    while pending:
        current = pending.pop()
        out.append(current)
        pending.extend(current.children)
    return out


def _drop_orphaned_subprocesses(workflow) -> None:
    """Forget subprocesses whose calling task was cut (and the subprocesses they called in turn)."""
    while True:
        known = set(workflow.tasks).union(*(sp.tasks for sp in workflow.subprocesses.values()))
        orphans = [key for key, sp in workflow.subprocesses.items() if sp.parent_task_id not in known]
        if not orphans:
            return
        for key in orphans:
            del workflow.subprocesses[key]
