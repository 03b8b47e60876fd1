"""Long-running instances: finished history is cut out of the engine state, and nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.compaction import KEEP_TASKS
from engine.definition import load_definition, parse_form
from engine.runtime import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FORMS = {
    "daily-check.schema.json": parse_form(
        "daily-check.schema.json", (FIXTURES / "daily-check.schema.json").read_bytes()
    )
}


def follow_up(days: int, compact_above: int | None, remind_every: int = 4):
    """Run the daily-check loop for ``days`` days through JSON, the check late every ``remind_every`` days.

    Returns what happened (event types with their activity, in order), the task count of the saved state
    after every step, and the last outcome.
    """
    definition = load_definition((FIXTURES / "daily-check-loop.bpmn").read_bytes(), FORMS, set())
    clock = FakeClock()
    runtime = Runtime(definition, clock=clock, compact_above=compact_above)
    outcome = runtime.start({"day": 0, "days": days, "summaries": 0})
    happened, sizes = [], []

    def step(result):
        happened.extend(
            (e.type, getattr(e, "activity_id", None)) for e in result.events if e.type != "history.compacted"
        )
        sizes.append(len(result.state["tasks"]))
        return result

    def saved(state):
        return json.loads(json.dumps(state))

    for day in range(days):
        if day % remind_every == 0:  # the check is late: the reminder branch runs to its own end event
            clock.advance(hours=7)
            outcome = step(runtime.fire_timers(saved(outcome.state)))
        (check,) = outcome.ready_tasks
        outcome = step(runtime.complete_task(saved(outcome.state), check.task_id, {"well": True}))
        if not outcome.completed:
            clock.advance(hours=25)
            outcome = step(runtime.fire_timers(saved(outcome.state)))
    return happened, sizes, outcome


def test_a_compacted_instance_does_exactly_what_an_uncompacted_one_does():
    plain, plain_sizes, plain_end = follow_up(24, compact_above=None)
    cut, cut_sizes, cut_end = follow_up(24, compact_above=0)
    assert cut == plain
    assert cut_end.completed and plain_end.completed
    assert cut_end.data == plain_end.data
    assert cut_end.data["day"] == cut_end.data["summaries"] == 24
    assert ("task.escalated", "Timer_CheckLate") in cut
    assert max(plain_sizes) > 300  # without compaction the tree holds every task ever run
    assert max(cut_sizes) < 60
    assert max(cut_sizes[-12:]) <= max(cut_sizes[:12])  # and it does not creep up, reminder after reminder


def test_compaction_is_reported_for_the_audit_trail():
    definition = load_definition((FIXTURES / "daily-check-loop.bpmn").read_bytes(), FORMS, set())
    clock = FakeClock()
    runtime = Runtime(definition, clock=clock, compact_above=0)
    outcome = runtime.start({"day": 0, "days": 5, "summaries": 0})
    completed = runtime.complete_task(outcome.state, outcome.ready_tasks[0].task_id, {"well": True})
    clock.advance(hours=25)
    outcome = runtime.fire_timers(completed.state)
    reports = [e for step in (completed, outcome) for e in step.events if e.type == "history.compacted"]
    assert sum(e.removed for e in reports) > 10  # the first day's tasks, gone from the state
    assert reports[-1].kept == len(outcome.state["tasks"])
    task_ids = {t.task_id for t in outcome.ready_tasks}
    assert task_ids <= set(outcome.state["tasks"])  # what can still run is kept


@pytest.mark.slow
def test_a_long_loop_never_stalls_with_the_default_threshold():
    # Without compaction, SpiffWorkflow's recursive ancestry walk fails after about a hundred days here.
    happened, sizes, outcome = follow_up(150, compact_above=KEEP_TASKS, remind_every=10)
    assert outcome.completed and outcome.data["day"] == 150
    assert max(sizes) <= 2 * KEEP_TASKS
