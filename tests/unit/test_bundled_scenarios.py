"""Every bundled diagram, as Tether's own loader reads it: each user task belongs to the party that does it in
the therapy network, and the diagram runs to completion through Tether's runtime and sandbox, once straight and
once with its state saved and restored (through JSON) at every wait state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from engine.clock import FakeClock
from engine.decisions import parse_decisions
from engine.definition import load_definition, parse_form
from engine.runtime import Runtime
from server.demo_data import with_slots

from ..scenario_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, COI, form_data

ROOT = Path(__file__).resolve().parents[2]
FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in (ROOT / "forms").glob("*.json")}
OPERATORS = {"notify", "publish", "http", "coi.assign", "slot.book"}
DECISIONS = parse_decisions({p.name: p.read_bytes() for p in (ROOT / "processes").glob("*.dmn")})
# The slots a scenario's scheduling form names, and what the server books for them (the fake clock starts on
# 2026-11-23 at 09:00 UTC): collection on the 24th, manufacturing from the 25th at 08:00.
SLOTS = {"apheresis_slot_id": "slot-aph", "manufacturing_slot_id": "slot-mfg"}
BOOKED = {
    "slot-aph": ("apheresis", {"site": "APH-1", "start": "2026-11-24T08:00:00Z", "end": "2026-11-24T12:00:00Z"}),
    "slot-mfg": ("manufacturing", {"site": "MFG-1", "start": "2026-11-25T08:00:00Z", "end": "2026-11-26T08:00:00Z"}),
}


def services(operator, params, data):
    """Stand-in operators: the COI, the bookings of the named slots (as ``slot.book`` returns them) and an
    acknowledgement; every call is recorded in ``CALLS``."""
    CALLS.append((operator, params))
    if operator == "coi.assign":
        return {"coi": COI}
    if operator == "slot.book":
        named = [slot_id for slot_id in params["slot_id"] if slot_id]
        return {BOOKED[slot_id][0]: {"slot_id": slot_id, **BOOKED[slot_id][1]} for slot_id in named}
    return {"ok": True}


CALLS: list[tuple[str, dict]] = []


# The party of every user task (the domain: the treatment centre enrols, schedules, receives and infuses; the
# apheresis unit collects; the manufacturing site receives, manufactures and its QA releases and assesses
# excursions; the courier has no user task of its own). A task missing here or at another party fails.
PARTIES = {
    "autologous-car-t.bpmn": {
        "Task_Enrolment": "treatment",
        "Task_Scheduling": "treatment",
        "Task_Apheresis": "apheresis",
        "Task_ReceiveAtManufacturing": "manufacturing",
        "Task_QaRelease": "manufacturing",
        "Task_RecollectionDecision": "treatment",
        "Task_PhysicianDecision": "treatment",
        "Task_QuarantineProduct": "treatment",
        "Task_ExcursionAssessment": "manufacturing",
        "Task_ReceiveAtCentre": "treatment",
        "Task_ConfirmAvailability": "treatment",
        "Task_StartLymphodepletion": "treatment",
        "Task_BedsideCheck": "treatment",
        "Task_RecordInfusion": "treatment",
        "Task_Day28FollowUp": "treatment",
    },
    "allogeneic.bpmn": {
        "Task_OrderFromInventory": "treatment",
        "Task_AllocateLot": "manufacturing",
        "Task_ReceiveAtSite": "treatment",
        "Task_BedsideCheck": "treatment",
        "Task_RecordInfusion": "treatment",
    },
}


def definition(diagram: str):
    """The bundled ``diagram`` as Tether loads it."""
    return load_definition((ROOT / "processes" / diagram).read_bytes(), FORMS, OPERATORS, DECISIONS)


@pytest.mark.parametrize("diagram", sorted(p.name for p in (ROOT / "processes").glob("*.bpmn")))
def test_every_user_task_belongs_to_the_party_that_does_it(diagram):
    user_tasks = definition(diagram).info.user_tasks
    assert {activity_id: task.party for activity_id, task in user_tasks.items()} == PARTIES[diagram]


def drive(diagram: str, journey, mode: str):
    """Run ``journey`` on ``diagram``; return the activity ids completed, in order, and the last outcome.

    A task step's own data (``("task", activity_id, data)``) changes its form's usual data.

    ``mode``: ``straight`` hands each state on as it is; ``save-restore`` through JSON at every wait state;
    ``compacted`` also cuts finished history out of the state after every step, however small it is.
    """
    clock = FakeClock()
    through_json = mode != "straight"
    runtime = Runtime(
        definition(diagram), clock=clock, service_caller=services, compact_above=0 if mode == "compacted" else None
    )
    return take(runtime, clock, runtime.start({"patient_reference": "PT-1"}), journey, through_json)


def take(runtime, clock, outcome, journey, through_json: bool):
    """Take ``journey``'s steps on ``runtime`` from ``outcome``; the activity ids completed and the last outcome."""
    visited = []

    def save(state):
        return json.loads(json.dumps(state)) if through_json else state

    for step in journey:
        kind = step[0]
        if kind == "task":
            ready = {t.activity_id: t for t in outcome.ready_tasks}
            assert step[1] in ready, f"expected {step[1]} to be ready, have {sorted(ready)}"
            task = ready[step[1]]
            data = {**form_data(task.form), **(step[2] if len(step) > 2 else {})}
            jsonschema.Draft202012Validator(FORMS[task.form]).validate(data)
            outcome = runtime.complete_task(save(outcome.state), task.task_id, data)
        elif kind == "message":
            outcome = runtime.deliver_message(save(outcome.state), step[1], step[2])
        elif kind == "advance":
            clock.advance(**step[1])
            outcome = runtime.fire_timers(save(outcome.state))
        visited.extend(e.activity_id for e in outcome.events if e.type in ("task.completed", "message.received"))
    return visited, outcome


MODES = pytest.mark.parametrize("mode", ["straight", "save-restore", "compacted"])


BOOKED_JOURNEY = with_slots(AUTOLOGOUS_HAPPY_PATH, SLOTS["apheresis_slot_id"], SLOTS["manufacturing_slot_id"])
# The autologous journey up to the wait for the courier to pick the fresh material up.
TO_PICKUP = BOOKED_JOURNEY[:3]


@MODES
def test_autologous_journey_completes(mode):
    visited, outcome = drive("autologous-car-t.bpmn", BOOKED_JOURNEY, mode)
    assert outcome.completed
    assert visited[0] == "Task_Enrolment" and visited[-1] == "Task_Day28FollowUp"
    assert outcome.data["coi_assignment"] == {"coi": COI}
    assert outcome.data["qc"]["result"] == "pass"
    assert outcome.data["bookings"]["manufacturing"]["start"] == "2026-11-25T08:00:00Z"


REJECTED = {"receipt_decision": "rejected", "bags_intact": False, "rejection_reason": "Bag leaking on arrival"}
# Collected, shipped, rejected at receipt, collected again under the same COI (a new DIN), then on to infusion.
RECOLLECTED_JOURNEY = [
    *BOOKED_JOURNEY[:5],
    ("task", "Task_ReceiveAtManufacturing", REJECTED),
    ("task", "Task_RecollectionDecision", {"recollection_decision": "recollect"}),
    BOOKED_JOURNEY[1],
    ("task", "Task_Apheresis", {"din": "G123498654322"}),
    *BOOKED_JOURNEY[3:],
]


@MODES
def test_rejected_material_is_collected_again_under_the_same_coi(mode):
    CALLS.clear()
    visited, outcome = drive("autologous-car-t.bpmn", RECOLLECTED_JOURNEY, mode)
    assert outcome.completed
    assert visited.count("Task_Apheresis") == 2 and visited.count("Task_ReceiveAtManufacturing") == 2
    assert [operator for operator, _ in CALLS].count("coi.assign") == 1
    assert [params["reason_code"] for operator, params in CALLS if operator == "slot.book"] == [None, "RECOLLECTION"]
    assert outcome.data["coi_assignment"] == {"coi": COI} and outcome.data["din"] == "G123498654322"


@MODES
def test_sent_back_to_scheduling_before_the_collection(mode):
    CALLS.clear()
    journey = [
        *BOOKED_JOURNEY[:2],
        ("message", "therapy.reschedule", {"reason_code": "PATIENT_REQUEST", "reason": None}),
        *BOOKED_JOURNEY[1:],
    ]
    visited, outcome = drive("autologous-car-t.bpmn", journey, mode)
    assert outcome.completed and visited.count("Task_Scheduling") == 2
    assert [params["reason_code"] for operator, params in CALLS if operator == "slot.book"] == [
        None,
        "PATIENT_REQUEST",
    ]


# Version 2 of the bundled autologous diagram: the day-28 wait and follow-up renamed.
RENAMED = {"Event_Day28": "Event_FollowUpDue", "Task_Day28FollowUp": "Task_FollowUp28"}


def version_two():
    text = (ROOT / "processes" / "autologous-car-t.bpmn").read_text()
    for before, after in RENAMED.items():
        text = text.replace(f'"{before}"', f'"{after}"').replace(f">{before}<", f">{after}<")
    return load_definition(text.encode(), FORMS, OPERATORS, DECISIONS)


@pytest.mark.parametrize("mode", ["straight", "save-restore"])
@pytest.mark.parametrize(
    ("waiting_at", "steps_taken"),
    [("the collection task", 2), ("the day-28 timer", BOOKED_JOURNEY.index(("advance", {"days": 29})))],
)
def test_a_therapy_moves_to_a_new_version_and_completes_there(mode, waiting_at, steps_taken):
    clock = FakeClock()
    old = definition("autologous-car-t.bpmn")
    before = Runtime(old, clock=clock, service_caller=services)
    _visited, outcome = take(
        before, clock, before.start({"patient_reference": "PT-1"}), BOOKED_JOURNEY[:steps_taken], mode != "straight"
    )
    assert bool(outcome.ready_tasks) == (waiting_at == "the collection task")
    state = json.loads(json.dumps(outcome.state)) if mode != "straight" else outcome.state
    runtime = Runtime(version_two(), clock=clock, service_caller=services)
    moved = runtime.migrate_from(old, state, RENAMED)
    assert {t.task_id for t in moved.ready_tasks} == {t.task_id for t in outcome.ready_tasks}, "tasks keep their ids"
    assert [(w.type, w.name if w.type == "message" else w.activity_id) for w in moved.waiting_for] == (
        [("message", "therapy.reschedule")] if waiting_at == "the collection task" else [("timer", "Event_FollowUpDue")]
    )
    rest = [
        (step[0], RENAMED.get(step[1], step[1]) if step[0] == "task" else step[1], *step[2:])
        for step in BOOKED_JOURNEY[steps_taken:]
    ]
    visited, final = take(runtime, clock, moved, rest, mode != "straight")
    assert final.completed, waiting_at
    assert visited[-1] == "Task_FollowUp28"


def notified(role: str) -> list[str]:
    """The messages ``notify`` was called with for ``role`` since the list of calls was last cleared."""
    return [params["message"] for operator, params in CALLS if operator == "notify" and params["role"] == role]


def waits_at_pickup(outcome) -> list:
    """The timer waits on the wait for the courier pickup."""
    return [w for w in outcome.waiting_for if w.type == "timer" and w.attached_to == "Event_CourierPickedUp"]


WARNING = "Fresh material not picked up 12 h before the booked manufacturing start: collect it now or rebook the slot"


@MODES
def test_logistics_is_warned_when_the_material_has_not_left_12_h_before_the_booked_manufacturing_start(mode):
    CALLS.clear()
    _visited, outcome = drive("autologous-car-t.bpmn", TO_PICKUP, mode)
    assert [call[1] for call in CALLS if call[0] == "slot.book"] == [
        {"slot_id": ["slot-aph", "slot-mfg"], "reason_code": None}
    ]
    (timer,) = waits_at_pickup(outcome)
    assert timer.due_at == datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # the clock starts on the 23rd at 09:00
    CALLS.clear()
    drive("autologous-car-t.bpmn", [*TO_PICKUP, ("advance", {"hours": 34, "minutes": 59})], mode)
    assert WARNING not in notified("logistics")
    CALLS.clear()
    journey = [*TO_PICKUP, ("advance", {"hours": 35, "minutes": 1}), *BOOKED_JOURNEY[3:]]
    _visited, outcome = drive("autologous-car-t.bpmn", journey, mode)
    assert notified("logistics").count(WARNING) == 1
    assert outcome.completed, "the warning does not stop the journey"


def test_no_warning_once_the_courier_has_picked_the_material_up():
    CALLS.clear()
    journey = [*BOOKED_JOURNEY[:4], ("advance", {"days": 3})]
    _visited, outcome = drive("autologous-car-t.bpmn", journey, "straight")
    assert WARNING not in notified("logistics")
    assert not waits_at_pickup(outcome)


def test_without_booked_slots_the_warning_uses_the_typed_manufacturing_slot_date():
    CALLS.clear()
    _visited, outcome = drive("autologous-car-t.bpmn", AUTOLOGOUS_HAPPY_PATH[:3], "straight")
    assert [call[1] for call in CALLS if call[0] == "slot.book"] == [{"slot_id": [None, None], "reason_code": None}]
    assert outcome.data["bookings"] == {}
    (timer,) = waits_at_pickup(outcome)
    typed = form_data("scheduling.schema.json")["manufacturing_slot_date"]
    assert timer.due_at == datetime.fromisoformat(typed + "T00:00:00+00:00") - timedelta(hours=12)


@MODES
def test_allogeneic_journey_completes(mode):
    visited, outcome = drive("allogeneic.bpmn", ALLOGENEIC_HAPPY_PATH, mode)
    assert outcome.completed
    assert visited[0] == "Task_OrderFromInventory" and visited[-1] == "Task_RecordInfusion"


def test_every_user_task_form_carries_a_valid_example():
    for name, schema in FORMS.items():
        if name.endswith(".schema.json"):
            assert schema.get("examples"), f"{name} has no example"
            for example in schema["examples"]:
                jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(example)
