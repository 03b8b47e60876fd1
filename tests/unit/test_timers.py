"""Timers through the runtime on a fake clock: every timer kind, as a catch event and on the boundary of a
user task, a receive task and a subprocess; and failing service tasks, which stop the instance at the task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from engine import events as ev
from engine.clock import FakeClock
from engine.definition import load_definition
from engine.errors import TaskNotReady
from engine.runtime import IncidentOpened, Runtime

from .engine_helpers import FIXTURES, OPERATORS, roundtrip

MODES = pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the fake clock starts at 09:00Z that day


def diagram(name: str, **timers: tuple[str, str]):
    """Load fixture ``name`` with the timer of each named event replaced by ``(kind, value)``."""
    tree = etree.parse(str(FIXTURES / name))
    for event_id, (kind, value) in timers.items():
        [definition] = tree.xpath(f"//*[@id='{event_id}']/bpmn:timerEventDefinition", namespaces={"bpmn": BPMN})
        for child in list(definition):
            definition.remove(child)
        etree.SubElement(definition, f"{{{BPMN}}}{kind}").text = value
    return load_definition(etree.tostring(tree), {}, OPERATORS)


def runtime_for(definition, clock, service_caller=None) -> Runtime:
    return Runtime(definition, clock=clock, service_caller=service_caller or (lambda *args: {}))


def fired(outcome) -> list[str]:
    return [e.activity_id for e in outcome.events if isinstance(e, ev.TimerFired)]


def escalations(outcome) -> list[ev.TaskEscalated]:
    return [e for e in outcome.events if isinstance(e, ev.TaskEscalated)]


# -- intermediate catch events ----------------------------------------------------------------------------
CATCH_TIMERS = {
    "duration, plain": ("timeDuration", "PT3H", {}),
    "duration, quoted": ("timeDuration", '"PT3H"', {}),
    "duration, expression": ("timeDuration", "'PT' + str(hours) + 'H'", {"hours": 3}),
    "date, plain with Z": ("timeDate", "2026-11-23T12:00:00Z", {}),
    "date, plain with offset": ("timeDate", "2026-11-23T14:00:00+02:00", {}),
    "date, naive is UTC": ("timeDate", "2026-11-23T12:00:00", {}),
    "date, quoted": ("timeDate", '"2026-11-23T12:00:00Z"', {}),
    "date, from process data": ("timeDate", "follow_up_at", {"follow_up_at": "2026-11-23T12:00:00Z"}),
    "cycle, one occurrence": ("timeCycle", "R1/PT3H", {}),
    "cycle, quoted": ("timeCycle", '"R1/PT3H"', {}),
}


@MODES
@pytest.mark.parametrize("kind, value, data", CATCH_TIMERS.values(), ids=CATCH_TIMERS.keys())
def test_catch_event_waits_until_due_then_moves_on(kind, value, data, through_json):
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-catch.bpmn", Timer_Wait=(kind, value)), clock)
    out = runtime.start(data)
    assert [w.to_dict() for w in out.waiting_for] == [
        {"type": "timer", "activity_id": "Timer_Wait", "due_at": "2026-11-23T12:00:00Z"}
    ]
    assert out.next_due == NOON and out.ready_tasks == []

    clock.now = NOON - timedelta(seconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert fired(out) == [] and out.ready_tasks == [], "a timer must not fire before it is due"

    clock.now = NOON + timedelta(milliseconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert fired(out) == ["Timer_Wait"]
    assert [t.activity_id for t in out.ready_tasks] == ["Task_FollowUp"]
    assert out.waiting_for == [] and out.next_due is None


def test_catch_event_that_came_due_long_ago_fires_once_on_the_next_command():
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-catch.bpmn"), clock)
    out = runtime.start()
    clock.advance(days=90)
    out = runtime.fire_timers(out.state)
    assert fired(out) == ["Timer_Wait"]
    out = runtime.fire_timers(out.state)
    assert fired(out) == [] and len(out.ready_tasks) == 1


def test_cycle_on_a_catch_event_sends_a_token_on_per_occurrence():
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-catch.bpmn", Timer_Wait=("timeCycle", "R2/PT1H")), clock)
    out = runtime.start()
    clock.advance(hours=1, seconds=1)
    out = runtime.fire_timers(out.state)
    assert fired(out) == ["Timer_Wait"] and len(out.ready_tasks) == 1
    assert out.next_due == clock.now.replace(second=0) + timedelta(hours=1)
    clock.advance(hours=5)
    out = runtime.fire_timers(out.state)
    assert fired(out) == ["Timer_Wait"] and len(out.ready_tasks) == 2
    assert out.waiting_for == [] and out.next_due is None


# -- boundary events ---------------------------------------------------------------------------------------
HOSTS = {
    # fixture: (host activity, its late timer and due delay, its expiry timer and delay, expiry end, role)
    "user task": (
        "timers-user-task.bpmn",
        "Task_Review",
        timedelta(hours=2),
        timedelta(days=1),
        "End_Expired",
        "coordinator",
    ),
    "receive task": (
        "timers-receive-task.bpmn",
        "Task_AwaitDelivery",
        timedelta(hours=24),
        timedelta(hours=72),
        "End_Lost",
        "logistics",
    ),
    "subprocess": (
        "timers-subprocess.bpmn",
        "Sub_Manufacture",
        timedelta(days=14),
        timedelta(days=28),
        "End_Abandoned",
        "manufacturing",
    ),
}
LATE_TIMER = {
    "timers-user-task.bpmn": "Timer_Late",
    "timers-receive-task.bpmn": "Timer_Late",
    "timers-subprocess.bpmn": "Timer_Late",
}
EXPIRY_TIMER = {
    "timers-user-task.bpmn": "Timer_Expired",
    "timers-receive-task.bpmn": "Timer_Lost",
    "timers-subprocess.bpmn": "Timer_Abandoned",
}


def open_work(outcome) -> set[str]:
    """What is still open: ready user tasks and awaited messages."""
    return {t.activity_id for t in outcome.ready_tasks} | {
        w.activity_id for w in outcome.waiting_for if w.type == "message"
    }


@MODES
@pytest.mark.parametrize("host", HOSTS.values(), ids=HOSTS.keys())
def test_non_interrupting_boundary_timer_escalates_and_leaves_the_work_open(host, through_json):
    fixture, host_id, late, _expiry, _end, role = host
    clock = FakeClock()
    runtime = runtime_for(diagram(fixture), clock)
    out = runtime.start()
    before = open_work(out)
    assert out.next_due == clock.now + late

    clock.advance(seconds=late.total_seconds() - 1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert fired(out) == [] and escalations(out) == []

    clock.advance(seconds=2)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert fired(out) == [LATE_TIMER[fixture]]
    [escalation] = escalations(out)
    assert (escalation.late_activity_id, escalation.role) == (host_id, role)
    assert escalation.late_activity_name == runtime.definition.info.activities[host_id].name
    assert open_work(out) == before, "a non-interrupting timer leaves the late work open"
    assert not out.completed


@MODES
@pytest.mark.parametrize("host", HOSTS.values(), ids=HOSTS.keys())
def test_interrupting_boundary_timer_cancels_the_work_and_takes_its_path(host, through_json):
    fixture, _host_id, _late, expiry, end, _role = host
    clock = FakeClock()
    runtime = runtime_for(diagram(fixture), clock)
    out = runtime.start()
    clock.advance(seconds=expiry.total_seconds() + 1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert EXPIRY_TIMER[fixture] in fired(out)
    assert open_work(out) == set() and out.waiting_for == []
    assert out.completed and out.events[-1].end_activity_id == end


BOUNDARY_TIMERS = {
    "duration, plain": ("timeDuration", "PT2H"),
    "date, plain with offset": ("timeDate", "2026-11-23T13:00:00+02:00"),
    "date, naive is UTC": ("timeDate", "2026-11-23T11:00:00"),
    "date, quoted": ("timeDate", "'2026-11-23T11:00:00Z'"),
    "cycle, one occurrence": ("timeCycle", "R1/PT2H"),
}


@MODES
@pytest.mark.parametrize("kind, value", BOUNDARY_TIMERS.values(), ids=BOUNDARY_TIMERS.keys())
def test_every_timer_kind_watches_a_user_task(kind, value, through_json):
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Late=(kind, value)), clock)
    out = runtime.start()
    eleven = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    [task] = out.ready_tasks
    assert task.due_at == eleven, "the task shows when its boundary timer is due"
    clock.now = eleven + timedelta(seconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert [e.late_activity_id for e in escalations(out)] == ["Task_Review"]
    assert [t.task_id for t in out.ready_tasks] == [task.task_id]
    assert out.ready_tasks[0].due_at == eleven + timedelta(hours=22), "then the next timer watching it"


@MODES
@pytest.mark.parametrize(
    "kind, value", [("timeDuration", "PT2H"), ("timeDate", "2026-11-23T11:00:00Z")], ids=["duration", "date"]
)
def test_interrupting_timer_of_each_kind_cancels_a_user_task(kind, value, through_json):
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Expired=(kind, value)), clock)
    out = runtime.start()
    clock.advance(hours=2, seconds=1)
    out = runtime.fire_timers(roundtrip(out.state, through_json))
    assert "task.cancelled" in [e.type for e in out.events]
    assert out.completed and out.events[-1].end_activity_id == "End_Expired"


def test_interrupting_cycle_fires_once_and_interrupts():
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Expired=("timeCycle", "R3/PT3H")), clock)
    out = runtime.start()
    clock.advance(hours=3, seconds=1)
    out = runtime.fire_timers(out.state)
    assert fired(out).count("Timer_Expired") == 1
    assert out.completed and out.ready_tasks == [] and out.waiting_for == []


@MODES
def test_cycle_timer_escalates_three_times_then_stops(through_json):
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Late=("timeCycle", "R3/PT1H")), clock)
    out = runtime.start()
    [task] = out.ready_tasks
    seen = []
    for hour in range(1, 6):
        clock.now = datetime(2026, 11, 23, 9 + hour, 0, 1, tzinfo=UTC)
        out = runtime.fire_timers(roundtrip(out.state, through_json))
        seen.append(len(escalations(out)))
        expected_due = datetime(2026, 11, 23, 10 + hour, 0, tzinfo=UTC) if hour < 3 else None
        late = [w for w in out.waiting_for if w.activity_id == "Timer_Late"]
        assert (late[0].due_at if late else None) == expected_due
    assert seen == [1, 1, 1, 0, 0]
    assert [t.task_id for t in out.ready_tasks] == [task.task_id], "escalations leave the task open"


def test_cycle_occurrences_missed_during_an_outage_all_fire_once():
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Late=("timeCycle", "R3/PT1H")), clock)
    out = runtime.start()
    clock.advance(hours=5)
    out = runtime.fire_timers(out.state)
    assert [e.late_activity_id for e in escalations(out)] == ["Task_Review"] * 3
    out = runtime.fire_timers(out.state)
    assert escalations(out) == []


def test_completing_the_task_disarms_its_boundary_timers():
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn"), clock)
    out = runtime.start()
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {})
    assert out.completed and out.waiting_for == [] and out.next_due is None
    clock.advance(days=2)
    assert fired(runtime.fire_timers(out.state)) == []


def test_tasks_inside_a_subprocess_show_the_subprocess_deadline():
    clock = FakeClock()
    out = runtime_for(diagram("timers-subprocess.bpmn"), clock).start()
    [task] = out.ready_tasks
    assert task.activity_id == "Task_Formulate" and task.due_at == clock.now + timedelta(days=14)


# -- failing service tasks ---------------------------------------------------------------------------------
class Courier:
    """A courier booking API that fails until told otherwise."""

    def __init__(self):
        self.up, self.calls = False, 0

    def __call__(self, operator, params, data):
        self.calls += 1
        if not self.up:
            raise ConnectionError("courier API refused the connection")
        return {"booking": "B-1"}


def prepared(courier, through_json=False):
    """An instance whose 'Prepare shipper' task was just completed, reaching the failing booking."""
    runtime = runtime_for(diagram("incident-service.bpmn"), FakeClock(), courier)
    out = runtime.start({"courier_url": "https://courier.example/book"})
    out = runtime.complete_task(roundtrip(out.state, through_json), out.ready_tasks[0].task_id, {"boxes": 2})
    return runtime, out


@MODES
def test_failing_service_task_keeps_what_happened_before_it(through_json):
    runtime, out = prepared(Courier(), through_json)
    assert [e.type for e in out.events][:1] == ["task.completed"]
    [incident] = [e for e in out.events if isinstance(e, IncidentOpened)]
    assert incident.activity_id == "Service_BookCourier" and incident.operator == "http"
    assert incident.error_type == "ConnectionError"
    assert "courier API refused the connection" in incident.message
    assert (incident.retries, incident.retry_backoff_base) == (2, 3), "as the diagram's spiffworkflow:retry says"
    assert [t.activity_id for t in out.failed_tasks] == ["Service_BookCourier"]
    assert out.ready_tasks == [] and "Service_BookCourier" in out.current_activities
    assert out.data["boxes"] == 2


@MODES
def test_retrying_a_failed_service_task_runs_it_again(through_json):
    courier = Courier()
    runtime, out = prepared(courier, through_json)
    task_id = out.failed_tasks[0].task_id

    again = runtime.retry_task(roundtrip(out.state, through_json), task_id)
    [incident] = [e for e in again.events if isinstance(e, IncidentOpened)]
    assert incident.task_id == task_id and courier.calls == 2

    courier.up = True
    done = runtime.retry_task(roundtrip(again.state, through_json), task_id)
    assert "service.called" in [e.type for e in done.events] and done.failed_tasks == []
    assert [t.activity_id for t in done.ready_tasks] == ["Task_Handover"]
    assert done.data["booking"] == {"booking": "B-1"}
    with pytest.raises(TaskNotReady):
        runtime.retry_task(done.state, task_id)


def test_a_failed_service_task_can_be_completed_by_hand():
    courier = Courier()
    runtime, out = prepared(courier)
    done = runtime.skip_task(out.state, out.failed_tasks[0].task_id, {"booked_by_phone": True})
    assert courier.calls == 1, "completing by hand does not call the operator"
    assert done.failed_tasks == [] and [t.activity_id for t in done.ready_tasks] == ["Task_Handover"]
    assert done.data["booking"] == {"booked_by_phone": True}


def test_service_task_without_retry_settings_reports_none():
    runtime = Runtime(diagram("timers-catch.bpmn"), service_caller=lambda *a: {})
    out = runtime.start()
    assert out.failed_tasks == []
    definition = load_definition((FIXTURES / "mini.bpmn").read_bytes(), _mini_forms(), OPERATORS)

    def broken(*args):
        raise TimeoutError("read timed out")

    runtime = Runtime(definition, service_caller=broken)
    out = runtime.start()
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {"eligible": True, "patient_initials": "A"})
    [incident] = [e for e in out.events if isinstance(e, IncidentOpened)]
    assert (incident.retries, incident.error_type) == (None, "TimeoutError")
    assert "read timed out" in incident.message


def _mini_forms() -> dict:
    from engine.definition import parse_form

    return {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("mini-*.json")}


def test_retrying_a_failed_task_inside_a_subprocess_keeps_its_deadlines():
    source = (
        (FIXTURES / "timers-subprocess.bpmn")
        .read_text()
        .replace(
            '<bpmn:userTask id="Task_Fill" name="Fill and finish">',
            '<bpmn:serviceTask id="Task_Fill" name="Book the fill slot"><bpmn:extensionElements>'
            '<spiffworkflow:serviceTaskOperator id="http" resultVariable="slot"><spiffworkflow:parameters>'
            '<spiffworkflow:parameter id="url" type="str" value="\'https://mes.example/slots\'"/>'
            "</spiffworkflow:parameters></spiffworkflow:serviceTaskOperator></bpmn:extensionElements>",
        )
        .replace(
            "<bpmn:outgoing>Flow_sub3</bpmn:outgoing>\n      </bpmn:userTask>",
            "<bpmn:outgoing>Flow_sub3</bpmn:outgoing>\n      </bpmn:serviceTask>",
        )
    )
    clock, courier = FakeClock(), Courier()
    runtime = runtime_for(load_definition(source.encode(), {}, OPERATORS), clock, courier)
    out = runtime.start()
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {})
    deadlines = [(w.activity_id, w.due_at) for w in out.waiting_for]
    assert [t.activity_id for t in out.failed_tasks] == ["Task_Fill"] and len(deadlines) == 2
    clock.advance(days=1)
    again = runtime.retry_task(out.state, out.failed_tasks[0].task_id)
    assert [(w.activity_id, w.due_at) for w in again.waiting_for] == deadlines
    courier.up = True
    done = runtime.retry_task(again.state, out.failed_tasks[0].task_id)
    assert done.completed and done.events[-1].end_activity_id == "End_Made"


@MODES
@pytest.mark.parametrize(
    ("kind", "value", "due"),
    [
        ("timeDuration", "PT24H", datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),  # 09:00 + 24 h + 3 h held
        ("timeDate", "2026-11-23T18:00:00Z", datetime(2026, 11, 23, 21, 0, tzinfo=UTC)),
        ("timeCycle", "R3/PT1H", datetime(2026, 11, 23, 13, 0, tzinfo=UTC)),  # the first occurrence, 3 h later
    ],
)
def test_shifting_the_timers_keeps_the_time_each_had_left(kind, value, due, through_json):
    clock = FakeClock()
    runtime = runtime_for(diagram("timers-user-task.bpmn", Timer_Late=(kind, value)), clock)
    out = runtime.start()
    out = runtime.shift_timers(roundtrip(out.state, through_json), 3 * 3600)
    [late] = [w for w in out.waiting_for if w.activity_id == "Timer_Late"]
    assert late.due_at == due
    clock.now = due - timedelta(seconds=1)
    assert escalations(runtime.fire_timers(roundtrip(out.state, through_json))) == []
    clock.now = due + timedelta(seconds=1)
    assert len(escalations(runtime.fire_timers(roundtrip(out.state, through_json)))) == 1
