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
    assert {p.name for p in COVERAGE.glob("*.bpmn")} == set(RUNS) | set(REFUSED) | {
        "timer-start.bpmn",
        "event-based-gateway.bpmn",
    }


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


@pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
def test_an_event_based_gateway_takes_the_path_of_the_event_that_comes_first(through_json):
    from engine.clock import FakeClock

    def saved(state):
        return json.loads(json.dumps(state)) if through_json else state

    clock = FakeClock()
    runtime = Runtime(_load("event-based-gateway.bpmn"), clock=clock)
    out = runtime.start({})
    assert [w.to_dict() for w in out.waiting_for] == [
        {"type": "message", "activity_id": "M", "name": "go"},
        {"type": "timer", "activity_id": "T", "due_at": "2026-11-23T10:00:00Z"},
    ]
    assert out.next_due == clock.now + timedelta(hours=1)
    by_message = runtime.deliver_message(saved(out.state), "go", {"pallet": 3})
    assert by_message.completed and by_message.events[-1].end_activity_id == "E1"
    assert by_message.data["go"] == {"pallet": 3}
    assert [(e.type, getattr(e, "activity_id", None)) for e in by_message.events if e.type == "message.received"] == [
        ("message.received", "M")
    ]
    clock.advance(hours=1, seconds=1)
    by_timer = runtime.fire_timers(saved(out.state))
    assert by_timer.completed and by_timer.events[-1].end_activity_id == "E2"
    assert [e.activity_id for e in by_timer.events if e.type == "timer.fired"] == ["T"]


def test_an_event_based_gateway_racing_two_timers_is_refused():
    content = (COVERAGE / "event-based-gateway.bpmn").read_text()
    second = content.replace(
        '<bpmn:messageEventDefinition messageRef="Msg"/>',
        "<bpmn:timerEventDefinition><bpmn:timeDuration>PT2H</bpmn:timeDuration></bpmn:timerEventDefinition>",
    )
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(second.encode(), {}, set())
    assert caught.value.element_id == "G" and caught.value.line == 6 and "2 timers" in caught.value.message


def test_a_message_after_an_event_based_gateway_may_declare_its_payload_schema():
    from engine.definition import message_catchers

    content = (COVERAGE / "event-based-gateway.bpmn").read_text()
    content = content.replace(
        '<bpmn:intermediateCatchEvent id="M">',
        '<bpmn:intermediateCatchEvent id="M"><bpmn:extensionElements><spiffworkflow:properties>'
        '<spiffworkflow:property name="payloadSchema" value="go.message.json"/>'
        "</spiffworkflow:properties></bpmn:extensionElements>",
    )
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
    definition = load_definition(content.encode(), {"go.message.json": schema}, set())
    assert definition.info.message_schemas == {"go": "go.message.json"}
    assert [(c.name, c.activity_id) for c in message_catchers(definition)] == [("go", "M")]
