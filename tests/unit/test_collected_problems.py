"""The studio's check reports every problem it can, each with its element and line, where an upload stops at the
first: a diagram with several mistakes lists each one, and the collected check finds nothing more than the upload
would refuse (a clean diagram collects no problem and still runs)."""

from __future__ import annotations

import pytest

from engine.decisions import parse_decisions
from engine.definition import load_definition, parse_form
from engine.errors import DefinitionInvalid
from engine.runtime import Runtime

from .engine_helpers import FIXTURES, OPERATORS, roundtrip

DIAGRAM = (FIXTURES / "decision.bpmn").read_text()
DECISIONS = parse_decisions({"manufacturing-site.dmn": (FIXTURES / "manufacturing-site.dmn").read_bytes()})


def broken() -> bytes:
    """The decision diagram with four mistakes on four elements: a user task in no role's lane (moved out of the
    lane into a second one named Chef), a form nobody shipped, a decision no file holds and an unsafe condition."""
    text = DIAGRAM.replace(
        '<bpmn:userTask id="Task_Measure" name="Record region and weight">',
        '<bpmn:userTask id="Task_Measure" name="Record region and weight"><bpmn:extensionElements>'
        '<spiffworkflow:properties><spiffworkflow:property name="formJsonSchemaFilename" value="nowhere.json"/>'
        "</spiffworkflow:properties></bpmn:extensionElements>",
    )
    text = text.replace("        <bpmn:flowNodeRef>Task_Confirm</bpmn:flowNodeRef>\n", "")
    text = text.replace(
        "    </bpmn:laneSet>",
        '      <bpmn:lane id="Lane_Chef" name="Chef"><bpmn:flowNodeRef>Task_Confirm</bpmn:flowNodeRef></bpmn:lane>\n'
        "    </bpmn:laneSet>",
    )
    text = text.replace(">manufacturing_site<", ">no_such_decision<")
    text = text.replace(
        '<bpmn:sequenceFlow id="Flow_4" sourceRef="Task_Confirm" targetRef="End_Done"/>',
        '<bpmn:sequenceFlow id="Flow_4" sourceRef="Task_Confirm" targetRef="End_Done">'
        "<bpmn:conditionExpression>__import__('os')</bpmn:conditionExpression></bpmn:sequenceFlow>",
    )
    return text.encode()


def test_the_collecting_check_reports_every_problem_each_on_its_element_and_line():
    problems: list[DefinitionInvalid] = []
    load_definition(broken(), {}, OPERATORS, DECISIONS, problems=problems)
    by_element = {p.element_id: p for p in problems}
    assert set(by_element) == {"Task_Measure", "Task_Confirm", "Rule_Site", "Flow_4"}
    assert "nowhere.json" in by_element["Task_Measure"].message
    assert "Chef" in by_element["Task_Confirm"].message
    assert "no_such_decision" in by_element["Rule_Site"].message
    assert "Flow_4" in by_element["Flow_4"].message
    assert all(isinstance(p.line, int) and p.line > 0 for p in problems)


def test_an_upload_still_stops_at_the_first_problem():
    with pytest.raises(DefinitionInvalid) as refused:
        load_definition(broken(), {}, OPERATORS, DECISIONS)
    assert refused.value.element_id in {"Task_Measure", "Task_Confirm", "Rule_Site", "Flow_4"}


def test_a_business_rule_task_naming_no_decision_is_collected_and_the_rest_still_checked():
    text = (
        broken()
        .decode()
        .replace("<spiffworkflow:calledDecisionId>no_such_decision</spiffworkflow:calledDecisionId>", "")
    )
    problems: list[DefinitionInvalid] = []
    load_definition(text.encode(), {}, OPERATORS, DECISIONS, problems=problems)
    assert {p.element_id for p in problems} == {"Task_Measure", "Task_Confirm", "Rule_Site", "Flow_4"}
    assert "names no decision" in next(p for p in problems if p.element_id == "Rule_Site").message


@pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
def test_a_clean_diagram_collects_nothing_and_runs_as_uploaded(through_json):
    problems: list[DefinitionInvalid] = []
    forms = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
    definition = load_definition(DIAGRAM.encode(), forms, OPERATORS, DECISIONS, problems=problems)
    assert problems == []
    runtime = Runtime(definition)
    outcome = runtime.start({"region": "EU", "weight_kg": 40})
    state = roundtrip(outcome.state, through_json)
    (measure,) = outcome.ready_tasks
    outcome = runtime.complete_task(state, measure.task_id, {"region": "EU", "weight_kg": 40})
    assert outcome.data["manufacturing_site"] == "MFG-2" and outcome.data["dose"] == {"band": "low"}
