"""The expression and script sandbox: what runs, what is refused and when, and SpiffWorkflow end to end."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import pytest
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from engine import sandbox
from engine.errors import ScriptFailed, ServiceCallFailed, UnsafeCode
from engine.sandbox import (
    SandboxEnvironment,
    SandboxScriptEngine,
    UnsafeSyntax,
    check_expression,
    check_script,
)

DATA = {
    "dose": 4,
    "limit": 10,
    "sample": {"id": "S-1", "volumes": [1.5, 2.5]},
    "name": "cart",
    "collected": "2024-03-01T08:00:00",
    "type": "autologous",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("dose * 2 + 1", 9),
        ("dose ** 2 - limit // 3", 13),
        ("dose < limit and not dose == 5", True),
        ("sample['id']", "S-1"),
        ("sample['volumes'][-1]", 2.5),
        ("sample['volumes'][:1]", [1.5]),
        ("sample.get('missing', 'none')", "none"),
        ("[v * 2 for v in sample['volumes'] if v > 2]", [5.0]),
        ("{k: len(k) for k in ['a', 'bb']}", {"a": 1, "bb": 2}),
        ("sum(sample['volumes']) + max(1, 2) + len(sorted({3, 1}))", 8.0),
        ("name.upper() + '-' + str(dose).zfill(3)", "CART-004"),
        ("f'{name}:{dose:03d}'", "cart:004"),
        ("(datetime.fromisoformat(collected) + timedelta(hours=24)).isoformat()", "2024-03-02T08:00:00"),
        ("datetime(2024, 1, 1, tzinfo=timezone.utc).year == date(2024, 1, 1).year", True),
        ("type == 'autologous'", True),
        ("'ab' * 3", "ababab"),
        ("datetime.strptime('2024-01-02', '%Y-%m-%d').day + len(datetime(2024, 1, 1).strftime('%Y-%m'))", 9),
        ("date.today() <= date.today() + timedelta(days=1)", True),
        ("\n  dose > 1\n", True),
    ],
)
def test_expressions_that_work(expression, expected):
    check_expression(expression)
    assert SandboxEnvironment().evaluate(expression, dict(DATA)) == expected


def test_expressions_see_task_data_and_external_context_without_changing_them():
    context = {"items": [1, 2]}
    env = SandboxEnvironment(extra_globals={"double": lambda x: x * 2})
    assert env.evaluate("double(len(items)) + extra", context, {"extra": 1}) == 5
    assert context == {"items": [1, 2]}


def test_script_reads_and_assigns_task_data_like_task_data_environment():
    script = (
        "count += 1\n"
        "counts['b'] = count\n"
        "first = items[0]\n"
        "total = 0\n"
        "for a, b in pairs:\n"
        "    total += a * b\n"
        "while count < 5:\n"
        "    count += 1\n"
        "if total > 10:\n"
        "    label = 'big'.upper()\n"
        "squares = [i * i for i in range(4)]\n"
        "def helper(x):\n"
        "    return x + 1\n"
        "helped = helper(1)\n"
        "due = (datetime(2024, 1, 1) + timedelta(days=2)).date().isoformat()\n"
        "print('debug output is discarded')\n"
    )
    check_script(script)
    context = {"count": 1, "counts": {"a": 1}, "items": [7], "pairs": [(1, 2), (3, 4)], "_private": 1}
    assert SandboxEnvironment().execute(script, context) is True
    assert context == {
        "count": 5,
        "counts": {"a": 1, "b": 2},
        "items": [7],
        "pairs": [(1, 2), (3, 4)],
        "first": 7,
        "a": 3,
        "b": 4,
        "total": 14,
        "label": "BIG",
        "squares": [0, 1, 4, 9],
        "helped": 2,
        "due": "2024-01-03",
        "_private": 1,
    }


def test_underscore_task_data_cannot_replace_the_guards():
    context = {"name": "cart", "_getattr_": None, "_write_": None, "__builtins__": {"open": open}}
    SandboxEnvironment().execute("upper = name.upper()", context)
    assert context["upper"] == "CART" and context["_getattr_"] is None
    assert SandboxEnvironment().evaluate("name.title()", context) == "Cart"


def test_script_leaves_no_injected_names_in_task_data():
    context: dict = {}
    env = SandboxEnvironment(extra_globals={"helper": lambda: 3})
    env.execute("x = helper()\nf = lambda: 1\nd = datetime\nsorter = sorted", context, {"ext": 1})
    assert context == {"x": 3}


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "().__class__.__base__.__subclasses__()",
        "[c for c in ().__class__.__mro__[1].__subclasses__()]",
        "getattr(x, '__class__')",
        "open('/etc/passwd')",
        "eval('1')",
        "exec('import os')",
        "compile('1', 'f', 'eval')",
        "globals()",
        "vars()",
        "type(x)",
        "_hidden",
        "__builtins__",
        "(lambda: 0).__globals__",
        "(lambda f=dose: f).__code__",
        "(lambda: 0).__closure__",
        "(y for y in ()).gi_frame.f_back.f_globals",
        "int.mro()",
        "'{0.__class__}'.format(1)",
        "'{x}'.format_map(data)",
        "x = 1",
        "dose +",
    ],
)
def test_hostile_or_invalid_expressions_refused_at_check_time(expression):
    with pytest.raises(UnsafeCode) as info:
        check_expression(expression)
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("script", "line"),
    [
        ("import os", 1),
        ("x = 1\nfrom os import system", 2),
        ("x = 1\ny = 2\nclass A:\n    pass", 3),
        ("try:\n    x = 1\nexcept Exception:\n    pass", 1),
        ("with x as y:\n    pass", 1),
        ("x = 1\nf = lambda: __import__('os')", 2),
        ("def f(_self):\n    return 1", 1),
        ("r = sorted(data, key=lambda d: d.__class__)", 1),
        ("g = (lambda: 0).__globals__\ng['__builtins__']", 1),
    ],
)
def test_hostile_scripts_refused_at_check_time_with_line(script, line):
    with pytest.raises(UnsafeCode) as info:
        check_script(script)
    assert info.value.line == line


DEFAULT_GUARD = "try:\n    rebooking\nexcept NameError:\n    rebooking = None\n"


def test_a_variable_not_yet_set_gets_its_default_and_a_set_one_is_kept():
    check_script(DEFAULT_GUARD)
    unset: dict = {}
    assert SandboxEnvironment().execute(DEFAULT_GUARD, unset) is True
    assert unset == {"rebooking": None}
    already = {"rebooking": {"reason_code": "PATIENT_REQUEST"}}
    SandboxEnvironment().execute(DEFAULT_GUARD, already)
    assert already == {"rebooking": {"reason_code": "PATIENT_REQUEST"}}


@pytest.mark.parametrize(
    "script",
    [
        "try:\n    x\nexcept Exception:\n    x = None",  # catches more than a missing name
        "try:\n    x\nexcept NameError:\n    y = None",  # sets another name
        "try:\n    x\nexcept NameError:\n    x = f()",  # runs code in the handler
        "try:\n    f()\nexcept NameError:\n    x = None",  # runs code in the body
        "try:\n    x\nexcept NameError as e:\n    x = None",
        "try:\n    x\nexcept NameError:\n    x = None\nfinally:\n    x = 1",
        "try:\n    x\nexcept NameError:\n    x = None\nelse:\n    x = 1",
        "try:\n    x\nexcept:\n    x = None",
    ],
)
def test_only_the_default_guard_form_of_try_is_allowed(script):
    with pytest.raises(UnsafeCode, match="Try statements"):
        check_script(script)


def test_syntax_errors_are_unsafe_code_and_syntax_errors():
    with pytest.raises(UnsafeSyntax) as info:
        check_script("x = 1\nif x\n    y = 2")
    assert isinstance(info.value, SyntaxError) and info.value.line == 2


def test_dunder_walk_given_straight_to_evaluate_is_refused_at_run_time():
    with pytest.raises(ScriptFailed) as info:
        SandboxEnvironment().evaluate("().__class__.__base__.__subclasses__()", {})
    assert isinstance(info.value.__cause__, UnsafeCode)


def test_guards_refuse_at_run_time_what_compiled_code_asks_for():
    env = SandboxEnvironment()
    with pytest.raises(AttributeError):
        env.builtins["_getattr_"]((), "__class__")
    with pytest.raises(AttributeError):
        env.builtins["_getattr_"](int, "mro")
    with pytest.raises(TypeError):
        env.builtins["_write_"](datetime(2024, 1, 1))
    with pytest.raises(ImportError):
        env.builtins["__import__"]("os")
    for name in ("open", "eval", "exec", "getattr", "type", "globals", "compile", "input"):
        assert name not in env.builtins


@pytest.mark.parametrize(
    "script",
    [
        "f = open\nf('/etc/passwd')",
        "t = type\nt('X', (), {})",
        "d = datetime(2024, 1, 1)\nd.year = 3",
        "x = [].append\nx.y = 1",
        "raise ValueError('dose too high')",
    ],
)
def test_unavailable_builtins_and_writes_fail_at_run_time(script):
    check_script(script)
    with pytest.raises(ScriptFailed) as info:
        SandboxEnvironment().execute(script, {})
    assert info.value.__cause__ is not None


def test_infinite_loop_stops_after_time_limit():
    env = SandboxEnvironment(time_limit=0.3, max_steps=10**12)
    started = time.thread_time()  # the limit counts the CPU time the script runs, whatever else the machine does
    with pytest.raises(ScriptFailed, match="time limit") as info:
        env.execute("x = 0\nwhile True:\n    pass", {})
    assert time.thread_time() - started < 2
    assert info.value.line in (2, 3)


def test_huge_loop_stops_at_step_budget():
    env = SandboxEnvironment(max_steps=10_000)
    with pytest.raises(ScriptFailed, match="10000 steps"):
        env.execute("x = 0\nfor i in range(1000):\n    for j in range(1000):\n        x += 1", {})
    with pytest.raises(ScriptFailed, match="steps"):
        env.evaluate("[i for i in range(100000)]", {})


def test_previous_trace_function_is_restored():
    def tracer(frame, event, arg):
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        SandboxEnvironment().evaluate("1 + 1", {})
        with pytest.raises(ScriptFailed):
            SandboxEnvironment(max_steps=10).execute("while True:\n    pass", {})
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


@pytest.mark.parametrize(
    "script",
    [
        "x = 'x' * 10**10",
        "x = 10**10 * [0]",
        "x = 10 ** 10 ** 6",
        "x = 1 << 10**9",
        "x = 2**60000 * 2**60000",
        "x = 'abc'\nx *= 10**9",
        "x = list(range(10**9))",
    ],
)
def test_huge_allocations_are_refused(script):
    started = time.thread_time()  # refused before the work is done: little CPU time, however busy the machine
    with pytest.raises(ScriptFailed, match="too large|limited"):
        SandboxEnvironment().execute(script, {})
    assert time.thread_time() - started < 1


def test_compilation_is_cached():
    sandbox._compile.cache_clear()
    env = SandboxEnvironment()
    for _ in range(3):
        env.evaluate("dose > 1", {"dose": 2})
    info = sandbox._compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# ---- SpiffWorkflow end to end ----

BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
    id="defs" targetNamespace="http://example.org/tether">
  <bpmn:process id="proc" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="compute"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>doses = [d * 2 for d in base]
total = sum(doses)</bpmn:script></bpmn:scriptTask>
    <bpmn:exclusiveGateway id="gw"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:outgoing>to_high</bpmn:outgoing><bpmn:outgoing>to_low</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:scriptTask id="high"><bpmn:incoming>to_high</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>
      <bpmn:script>HIGH_SCRIPT</bpmn:script></bpmn:scriptTask>
    <bpmn:serviceTask id="low"><bpmn:incoming>to_low</bpmn:incoming><bpmn:outgoing>f4</bpmn:outgoing>
      <bpmn:extensionElements>
        <spiffworkflow:serviceTaskOperator id="lab.lookup" resultVariable="lookup">
          <spiffworkflow:parameters>
            <spiffworkflow:parameter id="total" type="int" value="total" />
            <spiffworkflow:parameter id="label" type="str" value="'dose-' + str(total)" />
          </spiffworkflow:parameters>
        </spiffworkflow:serviceTaskOperator>
      </bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:endEvent id="end_high"><bpmn:incoming>f3</bpmn:incoming></bpmn:endEvent>
    <bpmn:endEvent id="end_low"><bpmn:incoming>f4</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute"/>
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="gw"/>
    <bpmn:sequenceFlow id="to_high" sourceRef="gw" targetRef="high">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">HIGH_CONDITION</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="to_low" sourceRef="gw" targetRef="low">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">total &lt;= 10</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="high" targetRef="end_high"/>
    <bpmn:sequenceFlow id="f4" sourceRef="low" targetRef="end_low"/>
  </bpmn:process>
</bpmn:definitions>
"""


def run_process(
    base: list, *, high_script: str = "branch = 'high'", high_condition: str = "total &gt; 10", service_caller=None
) -> BpmnWorkflow:
    """Parse the test diagram, start it with ``base`` in the task data and run it as far as it goes."""
    parser = SpiffBpmnParser()
    xml = BPMN.replace("HIGH_SCRIPT", high_script).replace("HIGH_CONDITION", high_condition)
    parser.add_bpmn_str(xml.encode())
    engine = SandboxScriptEngine(service_caller=service_caller)
    workflow = BpmnWorkflow(parser.get_spec("proc"), script_engine=engine)
    workflow.get_next_task(state=TaskState.READY).data.update(base=base)
    workflow.do_engine_steps()
    return workflow


def completed(workflow: BpmnWorkflow) -> list[str]:
    """Element ids of the completed BPMN tasks."""
    return [t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.COMPLETED) if t.task_spec.bpmn_id]


def test_spiff_gateway_takes_the_branch_the_script_data_selects():
    workflow = run_process([1, 2, 3])
    assert workflow.is_completed()
    assert completed(workflow) == ["start", "compute", "gw", "high", "end_high"]
    assert workflow.data["branch"] == "high" and workflow.data["total"] == 12


def test_spiff_service_task_result_lands_in_task_data():
    calls = []

    def caller(operation, params, data):
        calls.append((operation, params, dict(data)))
        data["base"].append(99)
        return {"found": True, "label": params["label"]}

    workflow = run_process([1, 2], service_caller=caller)
    assert workflow.is_completed() and "end_low" in completed(workflow)
    assert calls == [("lab.lookup", {"total": 6, "label": "dose-6"}, calls[0][2])]
    assert workflow.data["lookup"] == {"found": True, "label": "dose-6"}
    assert workflow.data["base"] == [1, 2]


def test_spiff_failing_service_keeps_original_error():
    original = ConnectionError("lab system unreachable")

    def caller(operation, params, data):
        raise original

    with pytest.raises(ServiceCallFailed) as info:
        run_process([1], service_caller=caller)
    assert "lab.lookup failed: lab system unreachable" in str(info.value)
    assert info.value.__cause__ is original and info.value.element_id == "low"


def test_spiff_script_that_imports_is_refused_and_imports_nothing():
    assert "this" not in sys.modules
    with pytest.raises(ScriptFailed) as info:
        run_process([50], high_script="import os\nimport this\nbranch = 'high'")
    assert isinstance(info.value.__cause__, UnsafeCode)
    assert info.value.element_id == "high" and info.value.line == 1
    assert "import" in str(info.value).lower() and "this" not in sys.modules


def test_spiff_failing_condition_names_expression_error_and_element():
    with pytest.raises(ScriptFailed) as info:
        run_process([50], high_condition="missing &gt; 10")
    message = str(info.value)
    assert "missing > 10" in message and "NameError" in message and "element gw" in message
    assert isinstance(info.value.__cause__, NameError)


def test_spiff_script_error_reports_element_and_line():
    with pytest.raises(ScriptFailed) as info:
        run_process([50], high_script="x = 1\ny = base[5]")
    assert info.value.element_id == "high" and info.value.line == 2
    assert "IndexError: list index out of range" in info.value.message  # raised in the script's worker process


def test_engine_validate_uses_the_sandbox_check():
    engine = SandboxScriptEngine()
    engine.validate("total > 1")
    with pytest.raises(UnsafeCode):
        engine.validate("__import__('os')")
    with pytest.raises(SyntaxError):
        engine.validate("> 5")
