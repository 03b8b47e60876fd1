"""What docs/bpmn-coverage.md claims, one small diagram per construct (tests/fixtures/coverage/): each either runs
to its end with the data it should leave, or is refused at upload in the modeler's words, naming the element and
its line and what to change."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engine.definition import load_definition
from engine.errors import DefinitionInvalid
from engine.runtime import Runtime

from .engine_helpers import FIXTURES, load_fixture

COVERAGE = FIXTURES / "coverage"

# fixture -> what the finished instance's data holds
RUNS = {
    "inclusive-gateway.bpmn": {"a": 1},
    "signal-events.bpmn": {},
    "escalation-events.bpmn": {"escalated": True},
    "error-events.bpmn": {"failed": True},
    "transaction-cancel.bpmn": {"cancelled": True},
    "data-objects.bpmn": {"lot": "L1"},
    "terminate-end.bpmn": {},
    "call-activity-in-file.bpmn": {"helped": True},
    "uncaught-error-end.bpmn": {},
}

# fixture -> (the element named, words of the refusal)
REFUSED = {
    "complex-gateway.bpmn": ("G", "complex gateway"),
    "event-based-gateway.bpmn": ("G", "event-based gateway"),
    "ad-hoc-subprocess.bpmn": ("Ad", "ad-hoc subprocess"),
    "data-store.bpmn": ("DSR", "data store"),
    "compensation.bpmn": ("Comp", "compensation event"),
    "event-subprocess.bpmn": ("ES", "event subprocess"),
    "conditional-event.bpmn": ("Cond", "conditional event"),
    "link-events.bpmn": ("LT", "link event"),
    "send-task.bpmn": ("Send", "send task"),
    "message-throw.bpmn": ("Th", "message throw event"),
    "signal-from-outside.bpmn": ("Ca", "throws nowhere"),
}


def _load(name: str):
    return load_definition((COVERAGE / name).read_bytes(), {}, {"notify"})


@pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_supported_construct_runs_to_its_end(name, through_json):
    definition = _load(name)
    runtime = Runtime(definition)
    out = runtime.start({})
    state = json.loads(json.dumps(out.state)) if through_json else out.state
    out = runtime.inspect(state)
    assert out.completed, name
    for key, value in RUNS[name].items():
        assert out.data[key] == value, (name, key)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_unsupported_construct_is_refused_naming_element_line_and_what_to_change(name):
    element, words = REFUSED[name]
    with pytest.raises(DefinitionInvalid) as caught:
        _load(name)
    error = caught.value
    assert error.element_id == element and words in error.message, error.message
    text = (COVERAGE / name).read_text().splitlines()
    assert f'id="{element}"' in text[error.line - 1], "the line is the element's"
    assert "Change it:" in error.message and "SpiffWorkflow" not in error.message


@pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
def test_a_timer_start_event_holds_the_first_step_until_it_fires(through_json):
    from engine.clock import FakeClock

    clock = FakeClock()
    runtime = Runtime(_load("timer-start.bpmn"), clock=clock)
    out = runtime.start({})
    [wait] = out.waiting_for
    assert (wait.type, wait.activity_id, wait.due_at) == ("timer", "S", clock.now + timedelta(hours=1))
    clock.advance(hours=1, seconds=1)
    out = runtime.fire_timers(json.loads(json.dumps(out.state)) if through_json else out.state)
    assert out.completed and out.data["a"] == 1


def test_the_coverage_fixtures_are_all_claimed():
    assert {p.name for p in COVERAGE.glob("*.bpmn")} == set(RUNS) | set(REFUSED) | {"timer-start.bpmn"}


def test_a_non_executable_pool_does_not_block_the_executable_one():
    definition = load_fixture("collaboration.bpmn")
    assert definition.info.key == "clinic_shipment"
    out = Runtime(definition).start({})
    assert [t.activity_id for t in out.ready_tasks] == ["Task_Order"]
    assert [
        (w.type, w.name) for w in Runtime(definition).complete_task(out.state, out.ready_tasks[0].task_id).waiting_for
    ] == [("message", "shipment.delivered")]


def test_several_executable_pools_are_refused_saying_how_to_split_them():
    with pytest.raises(DefinitionInvalid) as caught:
        load_fixture("collaboration-two-pools.bpmn")
    error = caught.value
    assert error.element_id == "Participant_Courier" and error.line == 8
    assert "Participant_Clinic" in error.message and "Participant_Courier" in error.message
    assert "one file per executable pool; message flows become messages posted through POST /api/v1/messages" in (
        error.message
    )
    assert "MessageFlow_Delivered" in error.message


def test_plain_and_manual_tasks_are_refused():
    content = (FIXTURES / "mini.bpmn").read_text().replace("bpmn:userTask", "bpmn:manualTask", 2)
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(content.encode(), {}, {"notify"})
    assert caught.value.element_id == "Task_Enrol" and "userTask" in caught.value.message
