"""Multi-instance and standard loop tasks: parallel and sequential instances of user, script and service tasks,
over a collection or a cardinality, with a completion condition; each user task instance is its own ready task
carrying its item. Each test runs straight and through a JSON save/restore between commands."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import DefinitionInvalid
from engine.outcome import Instance
from engine.runtime import Runtime

from .engine_helpers import FIXTURES, load_fixture, roundtrip

MODES = pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])


def _runtime(calls: list | None = None) -> Runtime:
    def caller(operator, params, data):
        (calls if calls is not None else []).append(params["message"])
        return {"sent": params["message"]}

    return Runtime(load_fixture("multi-instance.bpmn"), service_caller=caller)


@MODES
def test_parallel_instances_are_one_ready_task_each_with_their_item(through_json):
    calls: list = []
    runtime = _runtime(calls)
    out = runtime.start({"bags": ["BAG-1", "BAG-2"], "checks": 0})
    assert [(t.activity_id, t.role, t.form) for t in out.ready_tasks] == [
        ("Task_InspectBag", "qa", "bag-inspection.schema.json")
    ] * 2
    assert [t.instance for t in out.ready_tasks] == [
        Instance(index=0, count=2, variable="bag", item="BAG-1"),
        Instance(index=1, count=2, variable="bag", item="BAG-2"),
    ]
    assert "bag" not in out.data, "an instance's item is its own, not the process's"
    first, second = out.ready_tasks
    out = runtime.complete_task(roundtrip(out.state, through_json), second.task_id, {"intact": False})
    assert [t.task_id for t in out.ready_tasks] == [first.task_id], "the other bag's task stays open"
    assert [e.type for e in out.events] == ["task.completed"]
    out = runtime.complete_task(roundtrip(out.state, through_json), first.task_id, {"intact": True})
    assert out.data["inspections"] == [{"bag": "BAG-1", "intact": True}, {"bag": "BAG-2", "intact": False}]

    # Sequential over a cardinality of 3, stopped by its completion condition once a sample passes.
    [sample] = out.ready_tasks
    assert sample.instance == Instance(index=0, count=3, variable="sample", item=0)
    out = runtime.complete_task(roundtrip(out.state, through_json), sample.task_id, {"passed": False})
    [sample] = out.ready_tasks
    assert sample.instance == Instance(index=1, count=3, variable="sample", item=1)
    out = runtime.complete_task(roundtrip(out.state, through_json), sample.task_id, {"passed": True})

    # Then a sequential script per bag, a parallel service call per bag and a standard loop script, unattended.
    assert out.completed and out.ready_tasks == []
    assert out.data["sample_results"] == [False, True]
    assert out.data["labels"] == ["LBL-BAG-1", "LBL-BAG-2"]
    assert calls == ["Bag ready: BAG-1", "Bag ready: BAG-2"]
    assert out.data["notices"] == [{"sent": "Bag ready: BAG-1"}, {"sent": "Bag ready: BAG-2"}]
    assert out.data["checks"] == 3, "the loop runs while its condition holds"
    service_calls = [e for e in out.events if e.type == "service.called"]
    assert len(service_calls) == 2


@MODES
def test_an_empty_collection_runs_no_instance(through_json):
    runtime = _runtime()
    out = runtime.start({"bags": [], "checks": 0})
    [sample] = out.ready_tasks
    assert sample.activity_id == "Task_TestSample" and out.data["inspections"] == []


def test_a_missing_collection_stops_the_start_naming_the_task():
    with pytest.raises(Exception) as caught:
        _runtime().start({"checks": 0})
    assert getattr(caught.value, "element_id", None) == "Task_InspectBag"


@MODES
def test_a_standard_loop_user_task_asks_again_until_its_condition_ends_it(through_json):
    runtime = Runtime(load_fixture("loop-task.bpmn"))
    out = runtime.start({})
    for iteration, passed in enumerate((False, False)):
        [task] = out.ready_tasks
        assert task.activity_id == "Task_Retest" and task.instance == Instance(index=iteration, count=3)
        out = runtime.complete_task(roundtrip(out.state, through_json), task.task_id, {"passed": passed})
    [task] = out.ready_tasks
    assert task.instance == Instance(index=2, count=3)
    out = runtime.complete_task(roundtrip(out.state, through_json), task.task_id, {"passed": True})
    assert out.completed


def test_the_loop_maximum_ends_a_loop_whose_condition_still_holds():
    runtime = Runtime(load_fixture("loop-task.bpmn"))
    out = runtime.start({})
    for _ in range(3):
        [task] = out.ready_tasks
        out = runtime.complete_task(out.state, task.task_id, {"passed": False})
    assert out.completed


def test_a_data_item_whose_name_differs_from_its_id_is_refused():
    content = (FIXTURES / "multi-instance.bpmn").read_text()
    content = content.replace(
        '<bpmn:inputDataItem id="bag" name="bag"/>', '<bpmn:inputDataItem id="Item_1" name="bag"/>'
    )
    from engine.definition import load_definition, parse_form

    forms = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(content.encode(), forms, {"notify"})
    assert caught.value.element_id == "Item_1" and caught.value.line
    assert "'Item_1'" in caught.value.message and "'bag'" in caught.value.message


@MODES
def test_a_boundary_timer_on_a_multi_instance_task_escalates_and_a_message_cancels_every_instance(through_json):
    from engine.clock import FakeClock

    clock = FakeClock()
    runtime = Runtime(load_fixture("multi-instance.bpmn"), clock=clock, service_caller=lambda *_: {})
    out = runtime.start({"bags": ["BAG-1", "BAG-2", "BAG-3"], "checks": 0})
    due = clock.now + timedelta(hours=4)
    assert [t.due_at for t in out.ready_tasks] == [due] * 3, "each instance carries the task's deadline"
    clock.advance(hours=4, seconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    [escalated] = [e for e in out.events if e.type == "task.escalated"]
    assert (escalated.late_activity_id, escalated.role) == ("Task_InspectBag", "qa")
    first, *others = out.ready_tasks
    out = runtime.complete_task(roundtrip(out.state, through_json), first.task_id, {"intact": True})
    out = runtime.deliver_message(roundtrip(out.state, through_json), "lot.recalled", {"lot": "L1"})
    cancelled = [e for e in out.events if e.type == "task.cancelled"]
    assert sorted(e.task_id for e in cancelled) == sorted(t.task_id for t in others)
    assert {e.activity_id for e in cancelled} == {"Task_InspectBag"}
    assert out.completed and out.ready_tasks == []


@MODES
def test_a_parallel_completion_condition_cancels_the_other_instances(through_json):
    content = (FIXTURES / "multi-instance.bpmn").read_text()
    content = content.replace(
        '<bpmn:outputDataItem id="inspection" name="inspection"/>',
        '<bpmn:outputDataItem id="inspection" name="inspection"/>\n'
        "        <bpmn:completionCondition>not intact</bpmn:completionCondition>",
    )
    from engine.definition import load_definition, parse_form

    forms = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
    runtime = Runtime(load_definition(content.encode(), forms, {"notify"}), service_caller=lambda *_: {})
    out = runtime.start({"bags": ["BAG-1", "BAG-2", "BAG-3"], "checks": 0})
    first, *others = out.ready_tasks
    out = runtime.complete_task(roundtrip(out.state, through_json), first.task_id, {"intact": True})
    assert len(out.ready_tasks) == 2
    out = runtime.complete_task(roundtrip(out.state, through_json), others[0].task_id, {"intact": False})
    cancelled = [e.task_id for e in out.events if e.type == "task.cancelled"]
    assert cancelled == [others[1].task_id], "a damaged bag ends the inspection of the others"
    [sample] = out.ready_tasks
    assert sample.activity_id == "Task_TestSample"
    assert out.data["inspections"] == [{"bag": "BAG-1", "intact": True}, {"bag": "BAG-2", "intact": False}]


@MODES
def test_a_multi_instance_subprocess_gives_each_instance_its_own_tasks_with_the_item(through_json):
    runtime = Runtime(load_fixture("multi-instance-subprocess.bpmn"))
    out = runtime.start({"bags": ["B1", "B2"]})
    assert [(t.activity_id, t.role, t.instance) for t in out.ready_tasks] == [
        ("Task_Check", "qa", Instance(index=0, count=2, variable="bag", item="B1")),
        ("Task_Check", "qa", Instance(index=1, count=2, variable="bag", item="B2")),
    ]
    assert "bag" not in out.data
    first, second = out.ready_tasks
    out = runtime.complete_task(roundtrip(out.state, through_json), second.task_id, {"intact": False})
    out = runtime.complete_task(roundtrip(out.state, through_json), first.task_id, {"intact": True})
    assert out.completed and out.data["checks"] == [True, False]
