"""The runtime drives a diagram through user tasks, messages, gateways, service tasks and timers."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from engine import events as ev
from engine.clock import FakeClock
from engine.definition import Definition
from engine.errors import NotWaiting, StepBudgetExceeded, TaskNotReady
from engine.runtime import IncidentOpened, Runtime, _StepBudget

from .engine_helpers import load_fixture, roundtrip

MODES = pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])


class Calls:
    """A service caller that records what the diagram asked for."""

    def __init__(self):
        self.calls = []

    def __call__(self, operator, params, data):
        self.calls.append((operator, params))
        return {"sent_to": params.get("role")}


def types(outcome):
    return [e.type for e in outcome.events]


@MODES
def test_mini_journey_runs_to_completion(through_json):
    clock, calls = FakeClock(), Calls()
    runtime = Runtime(load_fixture(), clock=clock, service_caller=calls)

    out = runtime.start({"patient_reference": "PT-001"})
    assert types(out)[0] == "therapy.started"
    [enrol] = out.ready_tasks
    assert (enrol.activity_id, enrol.role, enrol.form) == ("Task_Enrol", "coordinator", "mini-enrol.schema.json")
    assert enrol.instructions == "Confirm consent and eligibility."
    assert enrol.due_at == clock.now + timedelta(hours=24)
    assert [w.to_dict()["type"] for w in out.waiting_for] == ["timer"]

    out = runtime.complete_task(
        roundtrip(out.state, through_json), enrol.task_id, {"eligible": True, "patient_initials": "AB"}
    )
    assert calls.calls == [("notify", {"role": "logistics", "message": "Shipment expected for AB"})]
    assert "task.completed" in types(out) and "service.called" in types(out)
    assert out.ready_tasks == []
    assert [(w.type, w.name) for w in out.waiting_for] == [("message", "shipment.delivered")]
    assert out.data["notified"] == {"sent_to": "logistics"}

    out = runtime.deliver_message(roundtrip(out.state, through_json), "shipment.delivered", {"carrier": "X"})
    assert "message.received" in types(out)
    assert out.data["shipment.delivered"] == {"carrier": "X"}
    [receive] = out.ready_tasks
    assert receive.signature == "approval" and receive.role == "logistics"
    assert runtime.definition.info.activities["Task_Receive"].condition_range == (2.0, 8.0)

    out = runtime.complete_task(roundtrip(out.state, through_json), receive.task_id, {"received_ok": True})
    [timer] = out.waiting_for
    assert timer.activity_id == "Timer_Wait" and timer.due_at == clock.now + timedelta(days=1)
    assert out.next_due == timer.due_at

    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert not out.completed, "a timer must not fire before it is due"
    clock.advance(days=1, seconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert out.completed
    assert "timer.fired" in types(out) and types(out)[-1] == "therapy.completed"
    assert out.events[-1].end_activity_id == "End_Done"


@MODES
def test_gateway_default_path_ends_the_therapy(through_json):
    runtime = Runtime(load_fixture(), service_caller=Calls())
    out = runtime.start()
    out = runtime.complete_task(
        roundtrip(out.state, through_json), out.ready_tasks[0].task_id, {"eligible": False, "patient_initials": "AB"}
    )
    assert out.completed and out.events[-1].end_activity_id == "End_NotEligible"


@MODES
def test_non_interrupting_boundary_timer_escalates_and_keeps_the_task(through_json):
    clock = FakeClock()
    runtime = Runtime(load_fixture(), clock=clock, service_caller=Calls())
    out = runtime.start()
    task_id = out.ready_tasks[0].task_id
    clock.advance(hours=25)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    escalations = [e for e in out.events if isinstance(e, ev.TaskEscalated)]
    assert [(e.late_activity_id, e.role) for e in escalations] == [("Task_Enrol", "coordinator")]
    assert [t.task_id for t in out.ready_tasks] == [task_id]


def test_completing_a_task_twice_is_refused():
    runtime = Runtime(load_fixture(), service_caller=Calls())
    out = runtime.start()
    task_id = out.ready_tasks[0].task_id
    runtime.complete_task(out.state, task_id, {"eligible": False, "patient_initials": "AB"})
    later = runtime.complete_task(out.state, task_id, {"eligible": False, "patient_initials": "AB"})
    with pytest.raises(TaskNotReady):
        runtime.complete_task(later.state, task_id, {"eligible": False, "patient_initials": "AB"})
    with pytest.raises(TaskNotReady):
        runtime.complete_task(out.state, "not-a-task-id", {})


def test_message_nobody_waits_for_is_refused():
    runtime = Runtime(load_fixture(), service_caller=Calls())
    out = runtime.start()
    with pytest.raises(NotWaiting):
        runtime.deliver_message(out.state, "shipment.delivered", {})


def test_failing_service_keeps_the_original_error():
    def broken(operator, params, data):
        raise ConnectionError("courier API refused the connection")

    runtime = Runtime(load_fixture(), service_caller=broken)
    out = runtime.start()
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {"eligible": True, "patient_initials": "A"})
    assert types(out)[0] == "task.completed", "the step before the failing service task is kept"
    [incident] = [e for e in out.events if isinstance(e, IncidentOpened)]
    assert "courier API refused the connection" in incident.message
    assert (incident.activity_id, incident.error_type) == ("Service_Notify", "ConnectionError")


def test_state_does_not_embed_the_spec_and_spec_document_restores():
    definition = load_fixture()
    out = Runtime(definition, service_caller=Calls()).start()
    assert "spec" not in out.state and "subprocess_specs" not in out.state
    restored = Definition.from_document(definition.info, definition.to_document())
    again = Runtime(restored, service_caller=Calls()).inspect(out.state)
    assert [t.task_id for t in again.ready_tasks] == [t.task_id for t in out.ready_tasks]


def test_cancel_withdraws_open_tasks():
    runtime = Runtime(load_fixture(), service_caller=Calls())
    out = runtime.start()
    out = runtime.cancel(out.state, "patient withdrew consent")
    assert types(out) == ["task.cancelled", "therapy.cancelled"]
    assert out.ready_tasks == [] and out.waiting_for == []


@pytest.mark.parametrize(("held", "allowed"), [("booked by the server", True), ("something else", False)])
def test_a_protected_key_may_change_only_to_what_the_server_holds(held, allowed):
    from engine.errors import ProcessDataRejected

    runtime = Runtime(
        load_fixture(),
        service_caller=lambda operator, params, data: "booked by the server",
        protected_keys=("notified",),
        server_value=lambda key: held,
    )
    out = runtime.start({"notified": "nothing yet"})
    enrol = out.ready_tasks[0].task_id
    if allowed:  # the notify task's result lands in the protected key: what the server holds
        assert (
            runtime.complete_task(out.state, enrol, {"eligible": True, "patient_initials": "AB"}).data["notified"]
            == "booked by the server"
        )
    else:
        with pytest.raises(ProcessDataRejected):
            runtime.complete_task(out.state, enrol, {"eligible": True, "patient_initials": "AB"})


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_the_time_budget_counts_the_commands_cpu_time_not_the_wait_for_a_busy_machine():
    budget = _StepBudget(max_steps=1_000, seconds=0.2)
    task = SimpleNamespace(task_spec=SimpleNamespace(bpmn_id="Script_Loop", name="Count"))
    time.sleep(0.3)  # waiting (for a core, a script worker, a service) is not the command running
    budget.spend(task)
    _burn(0.25)
    with pytest.raises(StepBudgetExceeded) as stopped:
        budget.spend(task)
    assert "0.2 seconds of CPU time" in stopped.value.message and "Script_Loop" in stopped.value.message
    assert stopped.value.details["cpu_seconds"] >= 0.2 and stopped.value.details["seconds"] >= 0.5


def test_a_command_that_waits_three_times_its_budget_is_stopped_all_the_same():
    budget = _StepBudget(max_steps=1_000, seconds=0.02)
    time.sleep(0.25)
    with pytest.raises(StepBudgetExceeded) as stopped:
        budget.spend(SimpleNamespace(task_spec=SimpleNamespace(bpmn_id="Task_Slow", name="Slow")))
    assert "0.06 seconds without reaching a wait state" in stopped.value.message
