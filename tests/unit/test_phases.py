"""Phases: an activity's ``phase`` property, else its lane's, names the part of the journey a therapy is in."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.decisions import parse_decisions
from engine.definition import PHASES, load_definition, parse_form
from engine.errors import DefinitionInvalid

from .engine_helpers import FIXTURES, OPERATORS

ROOT = Path(__file__).resolve().parents[2]
NETWORK = (FIXTURES / "network.bpmn").read_text()
FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
LANE_PARTY = '<spiffworkflow:property name="party" value="manufacturing"/>'
BUNDLED_OPERATORS = {"coi.assign", "notify", "publish", "http", "slot.book"}
TASK_PARTY = '<spiffworkflow:property name="party" value="logistics"/>'


def phased(lane: str | None = "manufacturing", task: str | None = "Shipment") -> str:
    text = NETWORK
    if lane is not None:
        text = text.replace(LANE_PARTY, f'{LANE_PARTY}<spiffworkflow:property name="phase" value="{lane}"/>')
    if task is not None:
        text = text.replace(TASK_PARTY, f'{TASK_PARTY}<spiffworkflow:property name="phase" value="{task}"/>')
    return text


def test_an_activity_takes_its_own_phase_else_its_lanes_else_none():
    activities = load_definition(phased().encode(), FORMS, OPERATORS).info.activities
    assert activities["Task_Manufacture"].phase == "manufacturing"  # its lane's
    assert activities["Timer_Late"].phase == "manufacturing"  # a boundary event in the lane too
    assert activities["Task_Ship"].phase == "shipment"  # its own, written in any case
    assert activities["Task_Enrol"].phase is None  # neither declares one


def test_an_activitys_own_phase_wins_over_its_lanes():
    text = phased(task=None).replace(
        '<bpmn:userTask id="Task_Manufacture" name="Manufacture the batch">',
        '<bpmn:userTask id="Task_Manufacture" name="Manufacture the batch"><bpmn:extensionElements>'
        '<spiffworkflow:properties><spiffworkflow:property name="phase" value="release"/></spiffworkflow:properties>'
        "</bpmn:extensionElements>",
    )
    assert load_definition(text.encode(), FORMS, OPERATORS).info.activities["Task_Manufacture"].phase == "release"


def test_the_phase_survives_the_stored_info():
    from engine.definition import DefinitionInfo

    info = load_definition(phased().encode(), FORMS, OPERATORS).info
    assert DefinitionInfo.from_dict(info.to_dict()).activities["Task_Ship"].phase == "shipment"


@pytest.mark.parametrize("value", ["follow up", "-release", "x" * 41, "release!"])
def test_a_phase_that_is_not_a_word_is_refused_naming_the_element(value):
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(phased(task=value).encode(), FORMS, OPERATORS)
    assert caught.value.element_id == "Task_Ship" and "'phase' property" in caught.value.message


def test_a_lanes_bad_phase_is_refused_naming_an_activity_of_it():
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(phased(lane="Manufacturing and QC").encode(), FORMS, OPERATORS)
    assert caught.value.element_id in ("Task_Manufacture", "Timer_Late")
    assert "lane's 'phase'" in caught.value.message


@pytest.mark.parametrize("name", ["autologous-car-t.bpmn", "allogeneic.bpmn"])
def test_every_place_a_bundled_therapy_waits_at_has_a_known_phase(name):
    forms = {p.name: parse_form(p.name, p.read_bytes()) for p in (ROOT / "forms").glob("*.json")}
    decisions = parse_decisions({p.name: p.read_bytes() for p in (ROOT / "processes").glob("*.dmn")})
    info = load_definition((ROOT / "processes" / name).read_bytes(), forms, BUNDLED_OPERATORS, decisions).info
    waiting = [
        a
        for a in info.activities.values()
        if a.activity_id in info.user_tasks
        or (not a.attached_to and a.kind in ("ReceiveTask", "IntermediateCatchEvent"))
    ]
    assert waiting
    assert {a.activity_id: a.phase for a in waiting if a.phase not in PHASES} == {}
