"""Diagrams and scripts an attacker or a careless designer might deploy, built as BPMN text."""

from __future__ import annotations

from xml.sax.saxutils import escape

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
                  id="Definitions_{key}" targetNamespace="http://tether.example/bpmn">
  <bpmn:process id="{key}" name="{key}" isExecutable="true">
"""
TAIL = """  </bpmn:process>
</bpmn:definitions>
"""
LANE = """    <bpmn:laneSet id="LaneSet_1">
      <bpmn:lane id="Lane_Coordinator" name="Coordinator">{refs}</bpmn:lane>
    </bpmn:laneSet>
"""
# Scripts that one long built-in call or one huge allocation would let past a line-by-line budget.
SLOW_CALL = "x = [1] * 300000\ny = [x] * 300000\nz = [list(x)] * 300000\nr = (y == z)"
HUGE_TEXT = {
    "ljust": "s = 'x'.ljust(10**9)",
    "format_spec": "s = f\"{'':>{10**9}}\"",
    "percent": "s = '%1000000000s' % 'x'",
    "expandtabs": "s = '\\t'.expandtabs(10**9)",
}


def _document(key: str, body: str, lane_refs: list[str] = ()) -> bytes:
    lanes = LANE.format(refs="".join(f"<bpmn:flowNodeRef>{r}</bpmn:flowNodeRef>" for r in lane_refs))
    return (HEAD.format(key=key) + (lanes if lane_refs else "") + body + TAIL).encode()


def _flow(flow_id: str, source: str, target: str) -> str:
    return f'    <bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}"/>\n'


def _user_task(task_id: str, incoming: str, outgoing: str) -> str:
    return (
        f'    <bpmn:userTask id="{task_id}" name="Check {task_id}"><bpmn:incoming>{incoming}</bpmn:incoming>'
        f"<bpmn:outgoing>{outgoing}</bpmn:outgoing></bpmn:userTask>\n"
    )


def looping(key: str, *, before: str = "none") -> bytes:
    """A script task whose exclusive gateway's default flow leads back to it: a loop that never waits.

    ``before``: "none" (the loop runs as the therapy starts), "timer" (after a PT1S timer) or "task"
    (after a coordinator's user task).
    """
    body, refs = '    <bpmn:startEvent id="Start_1"><bpmn:outgoing>F_start</bpmn:outgoing></bpmn:startEvent>\n', []
    entry = "Start_1"
    if before == "timer":
        body += (
            '    <bpmn:intermediateCatchEvent id="Timer_Soon" name="Soon"><bpmn:incoming>F_start</bpmn:incoming>'
            "<bpmn:outgoing>F_timer</bpmn:outgoing><bpmn:timerEventDefinition><bpmn:timeDuration>PT1S"
            "</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>\n"
        )
        body += _flow("F_start", "Start_1", "Timer_Soon")
        entry, first = "Timer_Soon", "F_timer"
    elif before == "task":
        body += _user_task("Task_First", "F_start", "F_task")
        body += _flow("F_start", "Start_1", "Task_First")
        entry, first, refs = "Task_First", "F_task", ["Start_1", "Task_First"]
    else:
        first = "F_start"
    body += (
        f'    <bpmn:scriptTask id="Script_Loop" name="Count"><bpmn:incoming>{first}</bpmn:incoming>'
        "<bpmn:incoming>F_back</bpmn:incoming><bpmn:outgoing>F_gw</bpmn:outgoing>"
        "<bpmn:script>laps = 1</bpmn:script></bpmn:scriptTask>\n"
    )
    body += _flow(first, entry, "Script_Loop")
    body += (
        '    <bpmn:exclusiveGateway id="Gateway_Again" default="F_back"><bpmn:incoming>F_gw</bpmn:incoming>'
        "<bpmn:outgoing>F_back</bpmn:outgoing></bpmn:exclusiveGateway>\n"
    )
    body += _flow("F_gw", "Script_Loop", "Gateway_Again") + _flow("F_back", "Gateway_Again", "Script_Loop")
    return _document(key, body, refs)


def scripted(key: str, script: str) -> bytes:
    """Start, one script task, then a coordinator's user task: the script runs as the therapy starts."""
    body = (
        '    <bpmn:startEvent id="Start_1"><bpmn:outgoing>F_1</bpmn:outgoing></bpmn:startEvent>\n'
        '    <bpmn:scriptTask id="Script_Hostile" name="Hostile"><bpmn:incoming>F_1</bpmn:incoming>'
        f"<bpmn:outgoing>F_2</bpmn:outgoing><bpmn:script>{escape(script)}</bpmn:script></bpmn:scriptTask>\n"
        + _user_task("Task_After", "F_2", "F_3")
        + '    <bpmn:endEvent id="End_1"><bpmn:incoming>F_3</bpmn:incoming></bpmn:endEvent>\n'
        + _flow("F_1", "Start_1", "Script_Hostile")
        + _flow("F_2", "Script_Hostile", "Task_After")
        + _flow("F_3", "Task_After", "End_1")
    )
    return _document(key, body, ["Start_1", "Task_After", "End_1"])


def with_element(key: str, element: str) -> bytes:
    """Start, one element of the given tag (``task``, ``manualTask``), end."""
    body = (
        '    <bpmn:startEvent id="Start_1"><bpmn:outgoing>F_1</bpmn:outgoing></bpmn:startEvent>\n'
        f'    <bpmn:{element} id="Odd_1" name="Does what?"><bpmn:incoming>F_1</bpmn:incoming>'
        f"<bpmn:outgoing>F_2</bpmn:outgoing></bpmn:{element}>\n"
        '    <bpmn:endEvent id="End_1"><bpmn:incoming>F_2</bpmn:incoming></bpmn:endEvent>\n'
        + _flow("F_1", "Start_1", "Odd_1")
        + _flow("F_2", "Odd_1", "End_1")
    )
    return _document(key, body)


def completion_condition(key: str, condition: str) -> bytes:
    """A multi-instance user task whose completionCondition is ``condition``."""
    body = (
        '    <bpmn:startEvent id="Start_1"><bpmn:outgoing>F_1</bpmn:outgoing></bpmn:startEvent>\n'
        '    <bpmn:userTask id="Task_Many" name="Many"><bpmn:incoming>F_1</bpmn:incoming>'
        "<bpmn:outgoing>F_2</bpmn:outgoing><bpmn:multiInstanceLoopCharacteristics>"
        "<bpmn:loopCardinality>3</bpmn:loopCardinality>"
        f"<bpmn:completionCondition>{escape(condition)}</bpmn:completionCondition>"
        "</bpmn:multiInstanceLoopCharacteristics></bpmn:userTask>\n"
        '    <bpmn:endEvent id="End_1"><bpmn:incoming>F_2</bpmn:incoming></bpmn:endEvent>\n'
        + _flow("F_1", "Start_1", "Task_Many")
        + _flow("F_2", "Task_Many", "End_1")
    )
    return _document(key, body, ["Start_1", "Task_Many", "End_1"])


def conditional_event(key: str, condition: str) -> bytes:
    """An intermediate conditional catch event whose condition is ``condition``."""
    body = (
        '    <bpmn:startEvent id="Start_1"><bpmn:outgoing>F_1</bpmn:outgoing></bpmn:startEvent>\n'
        '    <bpmn:intermediateCatchEvent id="Wait_Condition" name="Until"><bpmn:incoming>F_1</bpmn:incoming>'
        "<bpmn:outgoing>F_2</bpmn:outgoing><bpmn:conditionalEventDefinition>"
        f'<bpmn:condition xsi:type="bpmn:tFormalExpression">{escape(condition)}</bpmn:condition>'
        "</bpmn:conditionalEventDefinition></bpmn:intermediateCatchEvent>\n"
        '    <bpmn:endEvent id="End_1"><bpmn:incoming>F_2</bpmn:incoming></bpmn:endEvent>\n'
        + _flow("F_1", "Start_1", "Wait_Condition")
        + _flow("F_2", "Wait_Condition", "End_1")
    )
    return _document(key, body)
