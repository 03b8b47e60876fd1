"""Trying a diagram on a simulated clock: one run (path, events, alerts, end, vein-to-vein) and a batch of runs,
each in memory and bounded, straight and with the instance saved and restored through JSON after every step."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.decisions import parse_decisions
from engine.definition import load_definition, parse_form
from engine.simulation import MAX_RUNS, CompletedTask, Limits, Plan, Simulation, histogram

from .engine_helpers import FIXTURES, load_fixture

ROOT = Path(__file__).resolve().parents[2]
# A busy test machine must not fail the bundled diagram's scripts: each step gets more time than by default.
PATIENT = {"time_limit": 10.0, "time_budget": 60.0}
MODES = pytest.mark.parametrize("round_trip", [False, True], ids=["straight", "save-restore"])
FIXTURE_FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
BUNDLED_FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in (ROOT / "forms").glob("*.json")}
LOOP = Plan(
    start={"day": 0, "summaries": 0},
    data={"Task_DailyCheck": {"well": True}},
    choices={"Gateway_More": "Timer_NextDay"},
)
ENROL = {"Task_Enrol": {"eligible": True, "patient_initials": "AB"}, "Task_Receive": {"received_ok": True}}


def simulation(name: str, round_trip: bool = False, **kwargs) -> Simulation:
    return Simulation(load_fixture(name), FIXTURE_FORMS, round_trip=round_trip, **kwargs)


def path_of(result) -> list[str]:
    return [step["activity_id"] for step in result["path"]]


def by_completion(tasks: list[CompletedTask]):
    """The record's rule in short: the collection task's completion, the infusion start a form recorded."""
    collected = next((t.completed_at for t in reversed(tasks) if "apheresis" in t.activity_id.lower()), None)
    infused = next((t.data["infusion_started_at"] for t in tasks if "infusion_started_at" in t.data), None)
    from datetime import datetime

    return collected, datetime.fromisoformat(infused) if infused else None


@MODES
def test_a_boundary_timer_fires_only_when_the_task_takes_longer_than_it(round_trip):
    sim = simulation("timers-user-task.bpmn", round_trip)

    quick = sim.run(Plan(durations={"Task_Review": (1.5, 1.5)}))
    assert quick["status"] == "completed"
    assert quick["end"]["activity_id"] == "End_Reviewed"
    assert quick["alerts"] == [] and quick["timers"] == []
    review = next(step for step in quick["path"] if step["activity_id"] == "Task_Review")
    assert (review["started_at"], review["ended_at"], review["hours"]) == (
        "2026-11-23T09:00:00Z",
        "2026-11-23T10:30:00Z",
        1.5,
    )
    assert review["lane"] == "Coordinator" and review["party"] == "treatment"

    slow = sim.run(Plan(durations={"Task_Review": (3, 3)}))
    assert slow["status"] == "completed" and slow["end"]["activity_id"] == "End_Reviewed"
    assert [a["timer_activity_id"] for a in slow["alerts"]] == ["Timer_Late"]
    assert slow["alerts"][0]["kind"] == "escalation" and slow["alerts"][0]["role"] == "coordinator"
    assert (
        slow["alerts"][0]["message"]
        == "'Review eligibility' is late (Review late); the coordinator role is asked to act."
    )
    assert slow["escalations"][0]["at"] == "2026-11-23T11:00:01Z"
    assert "End_Chased" in path_of(slow)

    # Exactly at the timer's due time the person is first: the timer fires once its time has passed.
    on_time = sim.run(Plan(durations={"Task_Review": (2, 2)}))
    assert on_time["alerts"] == []

    expired = sim.run(Plan(durations={"Task_Review": (30, 30)}))
    assert expired["end"]["activity_id"] == "End_Expired"
    assert "Task_Review" not in path_of(expired)
    assert [e["type"] for e in expired["events"]][-2:] == ["timer.fired", "task.cancelled"]


@MODES
def test_the_conditions_decide_unless_the_designer_forces_a_branch(round_trip):
    sim = simulation("mini.bpmn", round_trip)

    natural = sim.run(Plan(data=ENROL))
    assert natural["status"] == "completed"
    assert path_of(natural) == [
        "StartEvent_Referral",
        "Task_Enrol",
        "Gateway_Eligible",
        "Service_Notify",
        "Event_Delivered",
        "Task_Receive",
        "Timer_Wait",
        "End_Done",
    ]
    assert [e["type"] for e in natural["events"]] == ["service.skipped", "message.delivered", "timer.fired"]
    assert natural["events"][1]["at"] == "2026-11-23T11:00:00Z"  # an hour after the notice, by default
    assert natural["ended_at"] == "2026-11-24T12:00:01Z"  # the day's wait after the receipt at 12:00

    forced = sim.run(Plan(data=ENROL, choices={"Gateway_Eligible": "End_NotEligible"}))
    assert forced["end"] == {"activity_id": "End_NotEligible", "name": "Not eligible"}
    assert path_of(forced)[-2:] == ["Gateway_Eligible", "End_NotEligible"]

    back = sim.run(
        Plan(
            data={"Task_Enrol": {"eligible": False, "patient_initials": "AB"}},
            choices={"Gateway_Eligible": "Service_Notify"},
        )
    )
    assert back["end"]["activity_id"] == "End_Done"


@MODES
def test_form_examples_and_message_payloads_carry_the_simulated_time(round_trip):
    definition = load_definition(
        (ROOT / "processes" / "autologous-car-t.bpmn").read_bytes(),
        BUNDLED_FORMS,
        {"notify", "publish", "http", "coi.assign", "slot.book"},
        parse_decisions({p.name: p.read_bytes() for p in (ROOT / "processes").glob("*.dmn")}),
    )
    sim = Simulation(
        definition, BUNDLED_FORMS, vein_to_vein=by_completion, round_trip=round_trip, runtime_options=PATIENT
    )
    plan = Plan(
        durations={
            "Task_Apheresis": (4, 4),
            "Event_ManufacturingStarted": (48, 48),
            "Task_RecordInfusion": (0.25, 0.25),
        }
    )
    result = sim.run(plan)
    assert result["status"] == "completed"
    assert result["end"]["activity_id"] == "EndEvent_TherapyCompleted"
    # Collected at 13:00 on day one (enrolment, scheduling and the collection took 1 + 1 + 4 h from 09:00); every
    # wait after it an hour, manufacturing 48 h; the infusion is recorded 15 minutes after the bedside check.
    assert result["vein_to_vein"]["collection_at"] == "2026-11-23T15:00:00Z"
    assert result["vein_to_vein"]["hours"] == 60.25
    # Nothing outside is called: every notice, the COI and the booking are skipped and said so.
    skipped = {e["activity_id"] for e in result["events"] if e["type"] == "service.skipped"}
    assert {"Task_AssignCoi", "Task_BookSlots", "Task_NotifyCourierPickup"} <= skipped
    # The deviations caught by boundary messages are not sent unless the designer gives them a duration.
    assert "Event_MaterialLost" not in path_of(result)
    assert result["alerts"] == []

    lost = sim.run(
        Plan(
            durations={"Task_AwaitFreshDelivery": (10, 10), "Event_MaterialLost": (2, 2)},
            data={"Task_RecollectionDecision": {"recollection_decision": "end_therapy"}},
        )
    )
    assert path_of(lost)[-4:-1] == ["Event_MaterialLost", "Task_RecollectionDecision", "Gateway_Recollect"]
    assert lost["end"]["activity_id"] == "EndEvent_MaterialRejected"
    assert lost["vein_to_vein"]["hours"] is None  # never infused


@MODES
def test_a_diagram_that_never_ends_is_stopped_and_said_so(round_trip):
    sim = simulation("daily-check-loop.bpmn", round_trip, limits=Limits(max_events=30))
    result = sim.run(LOOP)
    assert result["status"] == "did_not_finish"
    assert result["problem"].startswith("did not finish after ")
    assert "(30 simulated events)" in result["problem"]
    assert result["end"] is None

    steps = simulation("daily-check-loop.bpmn", round_trip, limits=Limits(max_steps=20))
    assert steps.run(LOOP)["status"] == "did_not_finish"

    days = simulation("daily-check-loop.bpmn", round_trip, limits=Limits(max_days=5))
    assert "5 simulated days" in days.run(LOOP)["problem"]


def test_a_failing_script_or_service_task_stops_the_run_where_it_failed():
    sim = simulation("mini.bpmn")
    failed = sim.run(Plan())  # the example-less form leaves the gateway's condition without its variable
    assert failed["status"] == "failed"
    assert "eligible" in failed["problem"]
    assert failed["events"][-1]["type"] == "error" and failed["events"][-1]["activity_id"] == "Gateway_Eligible"
    assert any(e["type"] == "form.invalid" and e["activity_id"] == "Task_Enrol" for e in failed["events"])

    stuck = sim.run(Plan(data={"Task_Enrol": {"eligible": True}}))  # the notice's parameter needs the initials
    assert stuck["status"] == "stuck"
    assert "Service_Notify" in stuck["problem"]
    assert [a["kind"] for a in stuck["alerts"]] == ["incident"]


@MODES
def test_a_batch_draws_durations_reproducibly_and_counts_ends_and_escalations(round_trip):
    sim = simulation("timers-user-task.bpmn", round_trip)
    plan = Plan(durations={"Task_Review": (0, 4)})
    report = sim.batch(plan, runs=40, seed=7)
    assert report["runs"] == report["completed_runs"] == 40
    assert report == sim.batch(plan, runs=40, seed=7)
    assert report != sim.batch(plan, runs=40, seed=8)
    [late] = report["escalations"]
    assert late["activity_id"] == "Timer_Late" and late["late_activity_id"] == "Task_Review"
    assert 10 < late["runs"] < 30  # about half the reviews take longer than two hours
    assert late["share"] == round(late["runs"] / 40, 3)
    assert report["ends"] == [{"activity_id": "End_Reviewed", "name": "Reviewed", "count": 40, "share": 1.0}]
    assert report["statuses"] == {"completed": 40}


def test_a_batch_reports_the_spread_of_vein_to_vein():
    definition = load_definition(
        (ROOT / "processes" / "autologous-car-t.bpmn").read_bytes(),
        BUNDLED_FORMS,
        {"notify", "publish", "http", "coi.assign", "slot.book"},
        parse_decisions({p.name: p.read_bytes() for p in (ROOT / "processes").glob("*.dmn")}),
    )
    sim = Simulation(definition, BUNDLED_FORMS, vein_to_vein=by_completion, runtime_options=PATIENT)
    plan = Plan(durations={"Event_ManufacturingStarted": (24, 240), "Task_RecordInfusion": (0, 1)})
    report = sim.batch(plan, runs=30, seed=1)
    assert report["statuses"] == {"completed": 30}, report["problems"]
    spread = report["vein_to_vein"]
    assert spread["count"] == 30
    assert (
        spread["min_hours"] <= spread["p10_hours"] <= spread["p50_hours"] <= spread["p90_hours"] <= spread["max_hours"]
    )
    assert 24 < spread["min_hours"] and spread["max_hours"] < 260
    assert sum(b["count"] for b in spread["histogram"]) == 30
    [thaw] = report["escalations"]
    assert thaw["activity_id"] == "Event_ThawToInfusionExceeded"
    assert 0 < thaw["runs"] < 30  # only the infusions slower than 30 minutes after the thaw


def test_a_batch_is_bounded():
    sim = simulation("timers-user-task.bpmn")
    with pytest.raises(ValueError):
        sim.batch(Plan(), runs=MAX_RUNS + 1)
    with pytest.raises(ValueError):
        sim.batch(Plan(), runs=0)
    stopped = sim.batch(Plan(), runs=5, wall_seconds=0)
    assert stopped["completed_runs"] < 5 and stopped["stopped"].startswith("stopped after")


def test_histogram_bins():
    assert histogram([]) == []
    assert histogram([5.0, 5.0]) == [{"from_hours": 5.0, "to_hours": 5.0, "count": 2}]
    bins = histogram([0.0, 1.0, 9.0, 10.0], bins=2)
    assert bins == [{"from_hours": 0.0, "to_hours": 5.0, "count": 2}, {"from_hours": 5.0, "to_hours": 10.0, "count": 2}]


@MODES
def test_after_an_event_based_gateway_the_first_event_to_come_wins(round_trip):
    definition = load_definition((FIXTURES / "coverage" / "event-based-gateway.bpmn").read_bytes(), {}, set())
    sim = Simulation(definition, {}, round_trip=round_trip)
    message_first = sim.run(Plan(durations={"M": (0.5, 0.5)}))
    assert message_first["end"]["activity_id"] == "E1"
    assert [e["type"] for e in message_first["events"]] == ["message.delivered"]
    timer_first = sim.run(Plan(durations={"M": (2, 2)}))  # the gateway's timer is due after an hour
    assert timer_first["end"]["activity_id"] == "E2"
    assert [e["activity_id"] for e in timer_first["timers"]] == ["T"]


@MODES
def test_a_cycle_on_a_slow_task_escalates_at_each_occurrence(round_trip):
    from .test_timers import diagram

    definition = diagram("timers-user-task.bpmn", Timer_Late=("timeCycle", "R3/PT1H"))
    sim = Simulation(definition, FIXTURE_FORMS, round_trip=round_trip)
    result = sim.run(Plan(durations={"Task_Review": (5, 5)}))
    assert [e["at"] for e in result["escalations"]] == [
        "2026-11-23T10:00:01Z",
        "2026-11-23T11:00:01Z",
        "2026-11-23T12:00:01Z",
    ]
    assert result["end"]["activity_id"] == "End_Reviewed"
    report = sim.batch(Plan(durations={"Task_Review": (5, 5)}), runs=3)
    assert report["escalations"][0]["runs"] == 3 and report["escalations"][0]["times"] == 9
