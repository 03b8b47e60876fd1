"""Call activities that call another deployed definition: bound at load time, run as the caller's own steps."""

from __future__ import annotations

import pytest

from engine.bpmn_xml import parse_bpmn
from engine.calls import CalledDefinition, CallSite, call_sites
from engine.clock import FakeClock
from engine.definition import Definition, DefinitionInfo, load_definition, parse_form
from engine.errors import DefinitionInvalid, NotMigratable
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


def follow_up_inside_a_called_process(days: int, compact_above: int | None):
    """A caller whose call activity runs the daily-check loop for ``days`` days, through JSON every step: what
    happened (event types with their activity), the task count of every saved state, and the last outcome."""
    daily = load_definition((FIXTURES / "daily-check-loop.bpmn").read_bytes(), FORMS, set())
    loop = CalledDefinition("daily_check", 1, daily, {"daily-check.schema.json": FORMS["daily-check.schema.json"]})
    content = CALLER.replace(b'calledElement="called_release"', b'calledElement="daily_check"')
    clock = FakeClock()
    runtime = Runtime(stored(caller(content, daily_check=loop)), clock=clock, compact_above=compact_above)
    happened, sizes = [], []

    def step(result):
        happened.extend(
            (e.type, getattr(e, "activity_id", None)) for e in result.events if e.type != "history.compacted"
        )
        inside = sum(len(sub["tasks"]) for sub in result.state["subprocesses"].values())
        sizes.append(len(result.state["tasks"]) + inside)
        return result

    out = step(runtime.start({"patient_reference": "PT-1", "day": 0, "days": days, "summaries": 0}))
    out = step(runtime.complete_task(roundtrip(out.state, True), out.ready_tasks[0].task_id, {"eligible": True}))
    for day in range(days):
        if day % 4 == 0:  # the check is late: the reminder branch runs
            clock.advance(hours=7)
            out = step(runtime.fire_timers(roundtrip(out.state, True)))
        (check,) = out.ready_tasks
        assert check.activity_id == "Task_DailyCheck" and check.role == "coordinator"
        out = step(runtime.complete_task(roundtrip(out.state, True), check.task_id, {"well": True}))
        if day < days - 1:
            clock.advance(hours=25)
            out = step(runtime.fire_timers(roundtrip(out.state, True)))
    (infuse,) = out.ready_tasks
    assert infuse.activity_id == "Task_Infuse", "the called process ended and the caller went on"
    out = step(runtime.complete_task(roundtrip(out.state, True), infuse.task_id, {}))
    return happened, sizes, out


def test_history_compaction_inside_a_called_process_changes_nothing_it_does():
    plain, plain_sizes, plain_end = follow_up_inside_a_called_process(16, compact_above=None)
    cut, cut_sizes, cut_end = follow_up_inside_a_called_process(16, compact_above=0)
    assert cut == plain and cut_end.completed and plain_end.completed
    assert cut_end.data == plain_end.data and cut_end.data["summaries"] == 16
    assert max(cut_sizes) < max(plain_sizes) / 2


def test_a_therapy_cannot_move_onto_a_called_version_without_its_open_task():
    old = stored(caller(called_release=called_version()))
    out = Runtime(old).start({"patient_reference": "PT-1"})
    out = Runtime(old).complete_task(out.state, out.ready_tasks[0].task_id, {"eligible": True})
    task = CALLED[CALLED.index(b'    <bpmn:userTask id="Task_Release"') : CALLED.index(b"    <bpmn:endEvent")]
    without = (
        CALLED.replace(task, b"")
        .replace(b"        <bpmn:flowNodeRef>Task_Release</bpmn:flowNodeRef>\n", b"")
        .replace(b'<bpmn:sequenceFlow id="Flow_r2" sourceRef="Task_Release" targetRef="End_Released"/>', b"")
        .replace(b'targetRef="Task_Release"', b'targetRef="End_Released"')
        .replace(b"<bpmn:incoming>Flow_r2</bpmn:incoming>", b"<bpmn:incoming>Flow_r1</bpmn:incoming>")
    )
    new = stored(caller(called_release=called_version(without, version=2)))
    assert "Task_Release" not in new.info.user_tasks
    with pytest.raises(NotMigratable) as caught:
        Runtime(new).migrate_from(old, roundtrip(out.state, True))
    assert caught.value.element_id == "Task_Release" and "inside 'called_release'" in caught.value.message


def waits_for_the_certificate() -> bytes:
    """The called process, waiting for the message ``qc.certificate`` (payload schema declared) before its task."""
    return (
        CALLED.replace(
            b'  <bpmn:process id="called_release"',
            b'  <bpmn:message id="Message_Certificate" name="qc.certificate"/>\n  <bpmn:process id="called_release"',
        )
        .replace(
            b'<bpmn:sequenceFlow id="Flow_r1" sourceRef="Start_Release" targetRef="Task_Release"/>',
            b'<bpmn:sequenceFlow id="Flow_r1" sourceRef="Start_Release" targetRef="Event_Certificate"/>'
            b'<bpmn:sequenceFlow id="Flow_r0" sourceRef="Event_Certificate" targetRef="Task_Release"/>'
            b'<bpmn:intermediateCatchEvent id="Event_Certificate" name="Certificate received">'
            b"<bpmn:extensionElements><spiffworkflow:properties>"
            b'<spiffworkflow:property name="payloadSchema" value="called-release.schema.json"/>'
            b"</spiffworkflow:properties></bpmn:extensionElements>"
            b"<bpmn:incoming>Flow_r1</bpmn:incoming><bpmn:outgoing>Flow_r0</bpmn:outgoing>"
            b'<bpmn:messageEventDefinition id="Def_Certificate" messageRef="Message_Certificate"/>'
            b"</bpmn:intermediateCatchEvent>",
        )
        .replace(
            b"<bpmn:incoming>Flow_r1</bpmn:incoming>\n      <bpmn:outgoing>Flow_r2",
            b"<bpmn:incoming>Flow_r0</bpmn:incoming>\n      <bpmn:outgoing>Flow_r2",
        )
    )


@MODES
def test_a_message_reaches_the_event_waiting_inside_the_called_process(through_json):
    definition = caller(called_release=called_version(waits_for_the_certificate()))
    assert definition.info.messages == ["qc.certificate"]
    assert definition.info.message_schemas == {"qc.certificate": RELEASE_FORM}
    runtime = Runtime(stored(definition) if through_json else definition)
    out = runtime.start({"patient_reference": "PT-1"})
    out = runtime.complete_task(roundtrip(out.state, through_json), out.ready_tasks[0].task_id, {"eligible": True})
    assert out.ready_tasks == [] and [(w.type, w.name) for w in out.waiting_for] == [("message", "qc.certificate")]
    out = runtime.deliver_message(roundtrip(out.state, through_json), "qc.certificate", {"released": True})
    [release] = out.ready_tasks
    assert release.activity_id == "Task_Release" and out.data["qc.certificate"] == {"released": True}


def test_a_call_of_its_own_process_or_of_nothing_is_refused():
    content = CALLER.replace(b'calledElement="called_release"', b'calledElement="caller_therapy"')
    error = refusal(lambda: caller(content))
    assert (error.element_id, error.line) == ("Call_Release", 27)
    assert "calls its own process 'caller_therapy'" in error.message
    blank = CALLER.replace(b'calledElement="called_release"', b'calledElement="  "')
    error = refusal(lambda: call_sites(parse_bpmn(blank)))
    assert error.element_id == "Call_Release" and "names no process to call" in error.message
