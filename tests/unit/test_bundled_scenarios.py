"""Every bundled diagram, as Tether's own loader reads it: each user task belongs to the party that does it in
the therapy network, and the diagram runs to completion through Tether's runtime and sandbox, once straight and
once with its state saved and restored (through JSON) at every wait state."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from engine.clock import FakeClock
from engine.definition import load_definition, parse_form
from engine.runtime import Runtime

from ..scenario_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, COI, form_data

ROOT = Path(__file__).resolve().parents[2]
FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in (ROOT / "forms").glob("*.json")}
OPERATORS = {"notify", "publish", "http", "coi.assign"}


def services(operator, params, data):
    """Stand-in operators: the COI and an acknowledgement."""
    return {"coi": COI} if operator == "coi.assign" else {"ok": True}


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
    return load_definition((ROOT / "processes" / diagram).read_bytes(), FORMS, OPERATORS)


@pytest.mark.parametrize("diagram", sorted(p.name for p in (ROOT / "processes").glob("*.bpmn")))
def test_every_user_task_belongs_to_the_party_that_does_it(diagram):
    user_tasks = definition(diagram).info.user_tasks
    assert {activity_id: task.party for activity_id, task in user_tasks.items()} == PARTIES[diagram]


def drive(diagram: str, journey, mode: str):
    """Run ``journey`` on ``diagram``; return the activity ids completed, in order, and the last outcome.

    ``mode``: ``straight`` hands each state on as it is; ``save-restore`` through JSON at every wait state;
    ``compacted`` also cuts finished history out of the state after every step, however small it is.
    """
    clock = FakeClock()
    through_json = mode != "straight"
    runtime = Runtime(
        definition(diagram), clock=clock, service_caller=services, compact_above=0 if mode == "compacted" else None
    )
    outcome = runtime.start({"patient_reference": "PT-1"})
    visited = []

    def save(state):
        return json.loads(json.dumps(state)) if through_json else state

    for step in journey:
        kind = step[0]
        if kind == "task":
            ready = {t.activity_id: t for t in outcome.ready_tasks}
            assert step[1] in ready, f"expected {step[1]} to be ready, have {sorted(ready)}"
            task = ready[step[1]]
            data = form_data(task.form)
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


@MODES
def test_autologous_journey_completes(mode):
    visited, outcome = drive("autologous-car-t.bpmn", AUTOLOGOUS_HAPPY_PATH, mode)
    assert outcome.completed
    assert visited[0] == "Task_Enrolment" and visited[-1] == "Task_Day28FollowUp"
    assert outcome.data["coi_assignment"] == {"coi": COI}
    assert outcome.data["qc"]["result"] == "pass"


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
