"""DMN decision tables: business rule tasks evaluate them in the sandbox, straight and with the state (and the
spec) saved and restored through JSON; a file that does not parse, an unsafe expression and a decision no file
has are refused at load with the decision, the rule and the line."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

import pytest

from engine.clock import FakeClock
from engine.decisions import describe, parse_decision_file, parse_decisions
from engine.definition import Definition, load_definition
from engine.errors import DefinitionInvalid, ScriptFailed, UnsafeCode
from engine.runtime import Runtime

from .engine_helpers import FIXTURES, roundtrip

SITE_DMN = (FIXTURES / "manufacturing-site.dmn").read_bytes()
DIAGRAM = (FIXTURES / "decision.bpmn").read_bytes()


def site_table(**replace: str) -> bytes:
    """The fixture table with cells replaced (``{cell id: new text}``, escaped as XML text)."""
    text = SITE_DMN.decode()
    for cell_id, new in replace.items():
        start = text.index(f'id="{cell_id}"')
        begin = text.index("<text>", start) + len("<text>")
        end = text.index("</text>", begin)
        text = text[:begin] + escape(new) + text[end:]
    return text.encode()


def loaded(dmn: bytes = SITE_DMN, diagram: bytes = DIAGRAM):
    return load_definition(diagram, {}, set(), parse_decisions({"manufacturing-site.dmn": dmn}))


@pytest.mark.parametrize("mode", ["straight", "save-restore"])
@pytest.mark.parametrize(
    ("region", "weight", "site", "band"),
    [
        ("EU", 40, "MFG-2", "low"),  # "EU" and "< 50": the first rule
        ("UK", 80, "MFG-2", "standard"),  # in ("EU", "UK") and an empty cell
        ("US", 80, "MFG-1", "standard"),  # "-" and 0 < ? <= 500, an output that calls str()
    ],
)
def test_a_business_rule_task_sets_the_outputs_of_the_matching_rule(mode, region, weight, site, band):
    definition = loaded()
    through_json = mode == "save-restore"
    if through_json:  # the spec as the server stores it, once per version
        definition = Definition.from_document(definition.info, json.loads(json.dumps(definition.to_document())))
    runtime = Runtime(definition, clock=FakeClock())
    started = runtime.start({})
    [measure] = started.ready_tasks
    done = runtime.complete_task(
        roundtrip(started.state, through_json), measure.task_id, {"region": region, "weight_kg": weight}
    )
    assert done.data["manufacturing_site"] == site and done.data["dose"] == {"band": band}
    assert [t.activity_id for t in done.ready_tasks] == ["Task_Confirm"]
    completed = [e.activity_id for e in done.events if type(e).__name__ == "ActivityCompleted"]
    assert "Rule_Site" in completed
    assert definition.info.decisions == {"Rule_Site": "manufacturing_site"}


def test_no_matching_rule_sets_nothing():
    runtime = Runtime(loaded(), clock=FakeClock())
    started = runtime.start({})
    done = runtime.complete_task(started.state, started.ready_tasks[0].task_id, {"region": "US", "weight_kg": 900})
    assert "manufacturing_site" not in done.data and [t.activity_id for t in done.ready_tasks] == ["Task_Confirm"]


def test_a_missing_input_fails_the_step_naming_the_task():
    runtime = Runtime(loaded(), clock=FakeClock())
    started = runtime.start({})
    with pytest.raises(ScriptFailed) as failed:
        runtime.complete_task(started.state, started.ready_tasks[0].task_id, {"region": "EU"})
    assert failed.value.element_id == "Rule_Site" and "weight_kg" in failed.value.message


def test_an_output_runs_with_the_sandbox_time_limit():
    slow = site_table(Rule_Other_Site="str(len([x for x in range(900000) for y in range(10)]))")
    runtime = Runtime(loaded(slow), clock=FakeClock(), time_limit=0.2)
    started = runtime.start({})
    with pytest.raises(ScriptFailed) as failed:
        runtime.complete_task(started.state, started.ready_tasks[0].task_id, {"region": "US", "weight_kg": 80})
    assert failed.value.element_id == "Rule_Site"


@pytest.mark.parametrize(
    ("cell", "text", "rule", "what"),
    [
        ("Rule_EU_Light_Weight", '__import__("os").system("true")', 1, "input"),
        ("Rule_EU_Site", "open('/etc/passwd').read()", 2, "output"),
        ("Rule_Other_Weight", "? < ().__class__", 3, "input"),
    ],
)
def test_an_unsafe_expression_is_refused_naming_the_decision_rule_and_line(cell, text, rule, what):
    with pytest.raises(UnsafeCode) as refused:
        parse_decisions({"site.dmn": site_table(**{cell: text})})
    error = refused.value
    assert error.element_id == cell and error.line and error.line > 1
    assert error.details["decision"] == "manufacturing_site" and error.details["rule"] == rule
    assert f"rule {rule}, {what}" in error.message and "manufacturing_site" in error.message
    assert error.details["file"] == "site.dmn"


def test_an_unsafe_input_expression_is_refused():
    text = SITE_DMN.replace(b"<text>region</text>", b"<text>region.__class__</text>")
    with pytest.raises(UnsafeCode) as refused:
        parse_decisions({"site.dmn": text})
    assert refused.value.element_id == "InputExpression_Region" or refused.value.element_id == "Input_Region"
    assert "input expression of column 1" in refused.value.message


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty"),
        (b"<definitions", "not well-formed"),
        (
            b'<?xml version="1.0"?><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"/>',
            "not a DMN",
        ),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><definitions/>', "DOCTYPE"),
        (SITE_DMN.replace(b'hitPolicy="UNIQUE"', b'hitPolicy="SUM"'), "hit policy SUM"),
        (site_table(Rule_EU_Site='"MFG-'), "Malformed Output Expression"),
        (SITE_DMN.replace(b'name="manufacturing_site" typeRef', b'name="site-name" typeRef'), "output column 1"),
    ],
)
def test_a_file_that_does_not_parse_is_refused(content, says):
    with pytest.raises(DefinitionInvalid) as refused:
        parse_decision_file("bad.dmn", content)
    assert says in refused.value.message and "bad.dmn" in refused.value.message


def test_two_files_with_one_decision_are_refused():
    with pytest.raises(DefinitionInvalid, match="in two files"):
        parse_decisions({"a.dmn": SITE_DMN, "b.dmn": SITE_DMN})


def test_a_business_rule_task_naming_an_unknown_decision_is_refused_with_element_and_line():
    diagram = DIAGRAM.replace(b">manufacturing_site<", b">site_by_region<")
    with pytest.raises(DefinitionInvalid) as refused:
        loaded(diagram=diagram)
    assert refused.value.element_id == "Rule_Site" and refused.value.line
    assert "site_by_region" in refused.value.message and "manufacturing_site" in refused.value.message
    with pytest.raises(DefinitionInvalid) as none:
        load_definition(DIAGRAM, {}, set())
    assert none.value.element_id == "Rule_Site" and "decisions available: none" in none.value.message


def test_a_business_rule_task_naming_no_decision_is_refused():
    diagram = DIAGRAM.replace(
        b"<spiffworkflow:calledDecisionId>manufacturing_site</spiffworkflow:calledDecisionId>", b""
    )
    with pytest.raises(DefinitionInvalid, match="names no decision") as refused:
        loaded(diagram=diagram)
    assert refused.value.element_id == "Rule_Site"


def test_describe_gives_the_table_as_written():
    table = describe("manufacturing-site.dmn", SITE_DMN.decode())
    assert table["id"] == "manufacturing_site" and table["hit_policy"] == "UNIQUE"
    assert [i["expression"] for i in table["inputs"]] == ["region", "weight_kg"]
    assert [o["name"] for o in table["outputs"]] == ["manufacturing_site", "dose.band"]
    assert [r["inputs"] for r in table["rules"]] == [['"EU"', "< 50"], ['in ("EU", "UK")', "-"], ["-", "0 < ? <= 500"]]
