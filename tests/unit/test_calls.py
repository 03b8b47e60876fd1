"""Call activities that call another deployed definition: bound at load time, run as the caller's own steps."""

from __future__ import annotations

import pytest

from engine.bpmn_xml import parse_bpmn
from engine.calls import CalledDefinition, CallSite, call_sites
from engine.definition import Definition, DefinitionInfo, load_definition, parse_form
from engine.errors import DefinitionInvalid
from engine.runtime import Runtime

from .engine_helpers import FIXTURES, OPERATORS, roundtrip

MODES = pytest.mark.parametrize("through_json", [False, True], ids=["straight", "save-restore"])
CALLER = (FIXTURES / "caller.bpmn").read_bytes()
CALLED = (FIXTURES / "called-release.bpmn").read_bytes()
RELEASE_FORM = "called-release.schema.json"
FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
# What the caller's upload brings: everything but the called process's own form, which comes with its version.
CALLER_FORMS = {name: schema for name, schema in FORMS.items() if name != RELEASE_FORM}


def called_version(content: bytes = CALLED, version: int = 1, key: str = "called_release", called=None):
    definition = load_definition(content, FORMS, OPERATORS, called=called)
    return CalledDefinition(key=key, version=version, definition=definition, forms={RELEASE_FORM: FORMS[RELEASE_FORM]})


def caller(content: bytes = CALLER, forms=None, **called: CalledDefinition) -> Definition:
    return load_definition(content, CALLER_FORMS if forms is None else forms, OPERATORS, called=called)


def stored(definition: Definition) -> Definition:
    """The definition as the server keeps it: its info and spec through JSON."""
    info = DefinitionInfo.from_dict(roundtrip(definition.info.to_dict(), True))
    return Definition.from_document(info, roundtrip(definition.to_document(), True))


def version_two() -> bytes:
    return CALLED.replace(b'name="Release the batch"', b'name="Release the batch (two signatures)"').replace(
        b"Check the certificate of analysis.", b"Check the certificate and the label."
    )


def test_the_caller_records_which_version_it_binds_and_takes_over_its_form():
    definition = caller(called_release=called_version(version=3))
    assert definition.info.called == {"Call_Release": {"key": "called_release", "version": 3}}
    assert "called_release" in definition.subprocess_specs
    assert RELEASE_FORM in definition.info.forms and "mini-enrol.schema.json" in definition.info.forms
    assert definition.info.user_tasks["Task_Release"].role == "qa"
    assert stored(definition).info.called == definition.info.called


@MODES
def test_a_therapy_runs_through_the_called_process_as_its_own_steps(through_json):
    definition = caller(called_release=called_version())
    runtime = Runtime(stored(definition) if through_json else definition)
    out = runtime.start({"patient_reference": "PT-1"})
    [enrol] = out.ready_tasks
    out = runtime.complete_task(
        roundtrip(out.state, through_json), enrol.task_id, {"eligible": True, "patient_initials": "AB"}
    )
    [release] = out.ready_tasks
    assert (release.activity_id, release.name, release.role, release.party, release.form) == (
        "Task_Release",
        "Release the batch",
        "qa",
        "manufacturing",
        RELEASE_FORM,
    )
    assert release.instructions == "Check the certificate of analysis."
    out = runtime.complete_task(roundtrip(out.state, through_json), release.task_id, {"released": True})
    [infuse] = out.ready_tasks
    assert infuse.activity_id == "Task_Infuse"
    assert out.data["released"] is True, "the called process's data comes back to the caller"
    out = runtime.complete_task(roundtrip(out.state, through_json), infuse.task_id, {})
    assert out.completed and out.events[-1].end_activity_id == "End_Infused"


@MODES
def test_a_new_called_version_does_not_change_a_running_caller(through_json):
    old = stored(caller(called_release=called_version()))
    runtime = Runtime(old)
    out = runtime.start({"patient_reference": "PT-1"})
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {"eligible": True, "patient_initials": "AB"})
    state = roundtrip(out.state, through_json)

    newer = caller(called_release=called_version(version_two(), version=2))
    assert newer.info.called["Call_Release"]["version"] == 2
    assert newer.info.user_tasks["Task_Release"].name == "Release the batch (two signatures)"

    # The therapy stays on the version it started on: the called process it is inside is still version 1's.
    again = Runtime(stored(old))
    out = again.complete_task(state, out.ready_tasks[0].task_id, {"released": False})
    assert [t.activity_id for t in out.ready_tasks] == ["Task_Infuse"]
    assert old.info.user_tasks["Task_Release"].name == "Release the batch"


@MODES
def test_a_therapy_inside_the_called_process_moves_onto_a_version_that_binds_a_newer_one(through_json):
    old = stored(caller(called_release=called_version()))
    runtime = Runtime(old)
    out = runtime.start({"patient_reference": "PT-1"})
    out = runtime.complete_task(out.state, out.ready_tasks[0].task_id, {"eligible": True, "patient_initials": "AB"})
    [inside] = out.ready_tasks

    new = stored(caller(called_release=called_version(version_two(), version=2)))
    moved = Runtime(new).migrate_from(old, roundtrip(out.state, through_json))
    [task] = moved.ready_tasks
    assert (task.task_id, task.name) == (inside.task_id, "Release the batch (two signatures)")
    assert task.instructions == "Check the certificate and the label."
    out = Runtime(new).complete_task(roundtrip(moved.state, through_json), task.task_id, {"released": True})
    out = Runtime(new).complete_task(roundtrip(out.state, through_json), out.ready_tasks[0].task_id, {})
    assert out.completed


def refusal(call) -> DefinitionInvalid:
    with pytest.raises(DefinitionInvalid) as caught:
        call()
    return caught.value


def test_a_called_element_neither_in_the_file_nor_deployed_is_refused_with_what_to_do():
    error = refusal(lambda: caller())
    assert (error.element_id, error.line) == ("Call_Release", 27)
    assert "'called_release'" in error.message and "Deploy the definition 'called_release' first" in error.message
    assert "include its process in this file" in error.message


@pytest.mark.parametrize(
    ("value", "says"),
    [("latest", "is not supported"), ("two", "is no version number"), ("0", "is no version number")],
)
def test_a_called_version_that_is_no_number_is_refused(value, says):
    content = CALLER.replace(
        b'calledElement="called_release">',
        b'calledElement="called_release"><bpmn:extensionElements><spiffworkflow:properties>'
        b'<spiffworkflow:property name="calledVersion" value="' + value.encode() + b'"/>'
        b"</spiffworkflow:properties></bpmn:extensionElements>",
    )
    error = refusal(lambda: caller(content, called_release=called_version()))
    assert error.element_id == "Call_Release" and error.line == 27 and says in error.message


def test_a_called_version_on_a_call_of_a_process_in_the_file_is_refused():
    content = CALLER.replace(
        b'calledElement="called_release">',
        b'calledElement="Sub_Release"><bpmn:extensionElements><spiffworkflow:properties>'
        b'<spiffworkflow:property name="calledVersion" value="2"/>'
        b"</spiffworkflow:properties></bpmn:extensionElements>",
    ).replace(b"</bpmn:definitions>", b'<bpmn:process id="Sub_Release"/></bpmn:definitions>')
    with pytest.raises(DefinitionInvalid) as caught:
        call_sites(parse_bpmn(content))
    assert caught.value.element_id == "Call_Release" and "is a process of this file" in caught.value.message
    assert call_sites(parse_bpmn(CALLER)) == [CallSite("Call_Release", "called_release", 27, None)]


def test_a_cycle_of_calls_across_definitions_is_refused():
    # called_release version 2 calls caller_therapy (version 1, which calls nothing deployed) back.
    plain_caller = CALLER.replace(
        b'<bpmn:callActivity id="Call_Release" name="Release the batch" calledElement="called_release">',
        b'<bpmn:userTask id="Call_Release" name="Release the batch">',
    ).replace(b"</bpmn:callActivity>", b"</bpmn:userTask>")
    caller_v1 = CalledDefinition("caller_therapy", 1, caller(plain_caller), FORMS)
    calls_back = CALLED.replace(
        b'<bpmn:endEvent id="End_Released" name="Released">',
        b'<bpmn:callActivity id="Call_Back" calledElement="caller_therapy"/><bpmn:endEvent id="End_Released">',
    )
    called_v2 = called_version(calls_back, version=2, called={"caller_therapy": caller_v1})
    assert called_v2.definition.info.called == {"Call_Back": {"key": "caller_therapy", "version": 1}}

    error = refusal(lambda: caller(called_release=called_v2))
    assert error.element_id == "Call_Release" and error.line == 27
    assert "calls 'caller_therapy' back (through its call activity Call_Back)" in error.message
    assert "cycle" in error.message


def test_a_called_form_that_differs_from_the_callers_is_refused():
    forms = {**CALLER_FORMS, RELEASE_FORM: {"type": "object", "title": "Another form"}}
    content = CALLER.replace(
        b'<bpmn:userTask id="Task_Infuse" name="Infuse">',
        b'<bpmn:userTask id="Task_Infuse" name="Infuse"><bpmn:extensionElements><spiffworkflow:properties>'
        b'<spiffworkflow:property name="formJsonSchemaFilename" value="called-release.schema.json"/>'
        b"</spiffworkflow:properties></bpmn:extensionElements>",
    )
    error = refusal(lambda: caller(content, forms, called_release=called_version()))
    assert error.element_id == "Call_Release" and "form called-release.schema.json differs" in error.message


def test_a_called_version_without_its_form_is_refused():
    bare = CalledDefinition("called_release", 1, called_version().definition, forms={})
    error = refusal(lambda: caller(called_release=bare))
    assert error.element_id == "Call_Release" and "uses the form called-release.schema.json" in error.message


def test_a_called_user_task_with_the_id_of_one_of_the_callers_is_refused():
    content = CALLER.replace(b"Task_Infuse", b"Task_Release")
    error = refusal(lambda: caller(content, called_release=called_version()))
    assert error.element_id == "Call_Release" and "user task Task_Release" in error.message
