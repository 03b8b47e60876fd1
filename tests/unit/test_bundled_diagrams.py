"""The bundled BPMN diagrams (processes/) and their forms (forms/).

Structural checks run over every diagram in processes/; the executable paths of the two reference
processes are driven with plain SpiffWorkflow 3.2 (no Tether engine code), with a script engine whose
service calls are recorded and answered locally.
"""

import ast
import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import jsonschema
import pytest
from lxml import etree
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.parser import BpmnValidator
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.bpmn.specs.event_definitions import timer as timer_module
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.spiff.parser.process import VALIDATOR as SPIFF_VALIDATOR
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.util.task import TaskState

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "processes"
FORMS = ROOT / "forms"
DIAGRAMS = sorted(PROCESSES.glob("*.bpmn"))

NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    "dc": "http://www.omg.org/spec/DD/20100524/DC",
    "di": "http://www.omg.org/spec/DD/20100524/DI",
    "spiffworkflow": "http://spiffworkflow.org/bpmn/schema/1.0/core",
}
ROLES = {"Coordinator", "Logistics", "Manufacturing", "QA"}
SIGNATURE_MEANINGS = {"approval", "rejection", "review", "responsibility"}
OPERATORS = {
    "coi.assign": (set(), set()),
    "notify": ({"role", "message"}, {"site", "party", "severity"}),
    "publish": ({"type", "data"}, set()),
    "http": ({"method", "url"}, {"headers", "json"}),
    "slot.book": ({"slot_id"}, {"reason_code"}),
}
NOTIFY_ROLES = {
    "admin",
    "designer",
    "coordinator",
    "manufacturing",
    "logistics",
    "qa",
    "integrator",
    "auditor",
}
FLOW_NODES = (
    "startEvent",
    "endEvent",
    "intermediateCatchEvent",
    "intermediateThrowEvent",
    "boundaryEvent",
    "task",
    "userTask",
    "serviceTask",
    "scriptTask",
    "receiveTask",
    "sendTask",
    "manualTask",
    "businessRuleTask",
    "callActivity",
    "subProcess",
    "exclusiveGateway",
    "parallelGateway",
    "inclusiveGateway",
    "eventBasedGateway",
)
from ..scenario_data import COI, FORM_DATA  # noqa: E402

# ---------------------------------------------------------------------------------------------- helpers


def q(tag):
    prefix, local = tag.split(":")
    return f"{{{NS[prefix]}}}{local}"


@cache
def load_tree(path):
    return etree.parse(str(path))


def xp(node, expr):
    return node.xpath(expr, namespaces=NS)


def executable_process(path):
    processes = xp(load_tree(path), "//bpmn:process[@isExecutable='true']")
    assert len(processes) == 1, f"{path.name}: expected exactly one executable process"
    return processes[0]


def flow_nodes(process):
    return [el for el in process if isinstance(el.tag, str) and etree.QName(el).localname in FLOW_NODES]


def properties(el):
    return {
        p.get("name"): p.get("value")
        for p in xp(el, "./bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property")
    }


def lane_of(process, node_id):
    return [
        lane.get("name")
        for lane in xp(process, ".//bpmn:lane")
        if node_id in [ref.text for ref in xp(lane, "./bpmn:flowNodeRef")]
    ]


@cache
def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def form_schema(filename):
    return load_json(FORMS / filename)


@cache
def parse(path, validator=None):
    parser = SpiffBpmnParser(validator=validator)
    parser.add_bpmn_file(str(path))
    parser.add_dmn_files_by_glob(str(PROCESSES / "*.dmn"))  # the decisions of its business rule tasks
    return parser


def expression_problems(expression):
    """What the sandbox refuses: imports, dunder/underscore names or attributes, dynamic evaluation."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        return [f"syntax error: {exc}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            problems.append(f"name {node.id}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            problems.append(f"attribute {node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id
            in {
                "eval",
                "exec",
                "compile",
                "getattr",
                "setattr",
                "delattr",
                "globals",
                "locals",
                "vars",
                "open",
                "__import__",
                "type",
            }
        ):
            problems.append(f"call to {node.func.id}")
    return problems


# ------------------------------------------------------------------------------------- structural checks


def test_bundled_diagrams_exist():
    names = {p.name for p in DIAGRAMS}
    assert {"autologous-car-t.bpmn", "allogeneic.bpmn"} <= names


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_diagram_is_valid_bpmn_and_parses(path):
    tree = load_tree(path)
    assert tree.getroot().tag == q("bpmn:definitions")
    # the BPMN 2.0 XSD, then the same with the spiffworkflow extension XSD imported
    BpmnValidator().validate(tree.getroot())
    SPIFF_VALIDATOR.validate(tree.getroot())
    process = executable_process(path)
    parser = parse(path, SPIFF_VALIDATOR)
    spec = parser.get_spec(process.get("id"))
    assert spec.name == process.get("id")
    assert process.get("name"), "the process needs a human-readable name"
    # a collaboration with one participant pointing at the process
    participants = xp(tree, "//bpmn:collaboration/bpmn:participant")
    assert [p.get("processRef") for p in participants] == [process.get("id")]


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_elements_have_readable_ids_and_names(path):
    process = executable_process(path)
    for el in flow_nodes(process):
        nid = el.get("id")
        assert re.fullmatch(r"[A-Z][A-Za-z]*_[A-Za-z0-9_]+", nid), nid
        assert not re.search(r"_[0-9a-z]{7}$", nid), f"{nid} looks generated"
        assert (el.get("name") or "").strip(), f"{nid} has no name"
    for flow in xp(process, "./bpmn:sequenceFlow"):
        assert flow.get("id").startswith("Flow_")


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_every_flow_node_sits_in_exactly_one_role_lane(path):
    process = executable_process(path)
    lanes = xp(process, "./bpmn:laneSet/bpmn:lane")
    assert lanes and {lane.get("name") for lane in lanes} <= ROLES
    for el in flow_nodes(process):
        assert len(lane_of(process, el.get("id"))) == 1, el.get("id")
    referenced = {ref.text for ref in xp(process, ".//bpmn:flowNodeRef")}
    assert referenced == {el.get("id") for el in flow_nodes(process)}


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_user_tasks_have_forms_instructions_and_roles(path):
    process = executable_process(path)
    user_tasks = xp(process, "./bpmn:userTask")
    assert user_tasks
    spec = parse(path).get_spec(process.get("id"))
    for task in user_tasks:
        tid = task.get("id")
        (lane,) = lane_of(process, tid)
        assert lane in ROLES
        assert spec.task_specs[tid].lane == lane
        props = properties(task)
        schema_file = props.get("formJsonSchemaFilename")
        ui_file = props.get("formUiSchemaFilename")
        assert schema_file and (FORMS / schema_file).is_file(), f"{tid}: missing form {schema_file}"
        assert ui_file and (FORMS / ui_file).is_file(), f"{tid}: missing ui schema {ui_file}"
        if "signature" in props:
            # one meaning, or "field: value=meaning, ..." (a meaning per value of a decision field)
            meanings = [pair.split("=")[-1].strip() for pair in props["signature"].split(":")[-1].split(",")]
            assert meanings and all(m in SIGNATURE_MEANINGS for m in meanings), tid
        instructions = xp(task, "./bpmn:extensionElements/spiffworkflow:instructionsForEndUser")
        assert len(instructions) == 1 and len(instructions[0].text.strip()) > 20, tid


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_service_tasks_use_known_operators(path):
    process = executable_process(path)
    for task in xp(process, "./bpmn:serviceTask"):
        ops = xp(task, "./bpmn:extensionElements/spiffworkflow:serviceTaskOperator")
        assert len(ops) == 1, task.get("id")
        op = ops[0]
        assert op.get("id") in OPERATORS, op.get("id")
        assert op.get("resultVariable"), task.get("id")
        params = {p.get("id"): p.get("value") for p in xp(op, "./spiffworkflow:parameters/spiffworkflow:parameter")}
        required, optional = OPERATORS[op.get("id")]
        assert required <= set(params) <= required | optional, task.get("id")
        for value in params.values():
            assert not expression_problems(value), (task.get("id"), value)
        if op.get("id") == "notify":
            assert ast.literal_eval(params["role"]) in NOTIFY_ROLES


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_gateways_are_deterministic_and_expressions_safe(path):
    process = executable_process(path)
    flows = {f.get("id"): f for f in xp(process, "./bpmn:sequenceFlow")}
    for gateway in xp(process, "./bpmn:exclusiveGateway"):
        outgoing = [flows[o.text] for o in xp(gateway, "./bpmn:outgoing")]
        if len(outgoing) < 2:
            continue
        default = gateway.get("default")
        assert default in {f.get("id") for f in outgoing}, f"{gateway.get('id')} has no default flow"
        for f in outgoing:
            if f.get("id") != default:
                assert xp(f, "./bpmn:conditionExpression"), f"{f.get('id')} has no condition"
            assert f.get("name"), f"{f.get('id')} leaves a decision without a label"
    for cond in xp(process, ".//bpmn:conditionExpression"):
        assert not expression_problems(cond.text), cond.text
    assert not xp(process, ".//bpmn:scriptTask"), "prefer gateway conditions over script tasks"


def _is_literal(text):
    try:
        ast.literal_eval(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_timers_messages_and_condition_ranges(path):
    tree = load_tree(path)
    process = executable_process(path)
    for expr in xp(process, ".//bpmn:timerEventDefinition/*"):
        text = expr.text.strip()
        assert not expression_problems(text), text
        local = etree.QName(expr).localname
        if not (text.startswith('"') and text.endswith('"')) or not _is_literal(text):
            assert local in ("timeDate", "timeDuration"), f"timer {text} should be a quoted duration or cycle"
            continue  # a date or a duration computed from the process data (the booked dates, a decision's output)
        value = ast.literal_eval(text)
        if local == "timeDuration":
            assert TimerEventDefinition.parse_iso_duration(value)
        elif local == "timeDate":
            TimerEventDefinition.get_datetime(value)
        else:
            TimerEventDefinition.parse_iso_recurring_interval(value)
    for boundary in xp(process, "./bpmn:boundaryEvent[bpmn:timerEventDefinition]"):
        assert boundary.get("cancelActivity") == "false", f"{boundary.get('id')}: escalation interrupts"
    messages = {m.get("id"): m.get("name") for m in xp(tree, "/bpmn:definitions/bpmn:message")}
    assert all(re.fullmatch(r"[a-z]+(\.[a-z_]+)+", name) for name in messages.values()), messages
    refs = [el.get("messageRef") for el in xp(process, ".//bpmn:messageEventDefinition | ./bpmn:receiveTask")]
    assert refs and set(refs) <= set(messages)
    assert set(messages) <= set(refs), "declared but unused messages"
    for el in [process, *flow_nodes(process)]:
        value = properties(el).get("conditionRange")
        if value is not None:
            m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)", value)
            assert m and float(m.group(1)) < float(m.group(2)), value


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.name)
def test_diagram_interchange_is_complete_and_tidy(path):
    tree = load_tree(path)
    process = executable_process(path)
    (plane,) = xp(tree, "//bpmndi:BPMNDiagram/bpmndi:BPMNPlane")
    shapes = {}
    for shape in xp(plane, "./bpmndi:BPMNShape"):
        (b,) = xp(shape, "./dc:Bounds")
        shapes[shape.get("bpmnElement")] = tuple(float(b.get(k)) for k in ("x", "y", "width", "height"))
    edges = {
        e.get("bpmnElement"): [(float(w.get("x")), float(w.get("y"))) for w in xp(e, "./di:waypoint")]
        for e in xp(plane, "./bpmndi:BPMNEdge")
    }
    participant = xp(tree, "//bpmn:participant")[0].get("id")
    lanes = {lane.get("id"): lane for lane in xp(process, ".//bpmn:lane")}
    nodes = {el.get("id"): el for el in flow_nodes(process)}
    assert set(shapes) == {participant, *lanes, *nodes}
    assert set(edges) == {f.get("id") for f in xp(process, "./bpmn:sequenceFlow")}
    assert all(len(points) >= 2 for points in edges.values())

    def inside(inner, outer):
        return (
            outer[0] <= inner[0]
            and outer[1] <= inner[1]
            and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3]
        )

    def overlaps(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    for lane_id, lane in lanes.items():
        assert inside(shapes[lane_id], shapes[participant])
        for ref in xp(lane, "./bpmn:flowNodeRef"):
            assert inside(shapes[ref.text], shapes[lane_id]), f"{ref.text} is drawn outside its lane"
    lane_ids = list(lanes)
    for i, a in enumerate(lane_ids):
        for b in lane_ids[i + 1 :]:
            assert not overlaps(shapes[a], shapes[b])
    # boundary events sit on their host's border
    for el in xp(process, "./bpmn:boundaryEvent"):
        x, y, w, h = shapes[el.get("id")]
        cx, cy = x + w / 2, y + h / 2
        hx, hy, hw, hh = shapes[el.get("attachedToRef")]
        on_horizontal = hx <= cx <= hx + hw and cy in (hy, hy + hh)
        on_vertical = hy <= cy <= hy + hh and cx in (hx, hx + hw)
        assert on_horizontal or on_vertical, f"{el.get('id')} is not on its host's border"
    # no two flow nodes overlap (boundary events excepted on their host)
    ids = [n for n in nodes if etree.QName(nodes[n]).localname != "boundaryEvent"]
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert not overlaps(shapes[a], shapes[b]), f"{a} overlaps {b}"
    # edges start and end on their nodes and are drawn left to right except for loops back
    for flow in xp(process, "./bpmn:sequenceFlow"):
        points = edges[flow.get("id")]
        for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
            assert x1 == x2 or y1 == y2, f"{flow.get('id')} is not orthogonal"
        for end, ref in ((points[0], flow.get("sourceRef")), (points[-1], flow.get("targetRef"))):
            x, y, w, h = shapes[ref]
            assert x - 1 <= end[0] <= x + w + 1 and y - 1 <= end[1] <= y + h + 1, (flow.get("id"), ref)


def test_every_form_file_is_a_valid_form():
    schemas = sorted(FORMS.glob("*.schema.json"))
    assert schemas
    for path in schemas:
        schema = load_json(path)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object" and schema["title"] and schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        for name, prop in schema["properties"].items():
            assert prop.get("title"), f"{path.name}: {name} has no title"
            assert prop.get("description"), f"{path.name}: {name} has no description"
            if name == "scanned_coi":
                assert prop["type"] == "string" and prop["title"] == "Scan the bag label (COI)"
        ui = load_json(path.with_name(path.name.replace(".schema.json", ".uischema.json")))
        assert ui["ui:order"] == list(schema["properties"]), path.name
        assert set(ui) - {"ui:order"} <= set(schema["properties"]), path.name
        if "scanned_coi" in schema["properties"]:
            assert ui["scanned_coi"]["ui:autofocus"] is True and ui["scanned_coi"]["ui:help"]


def test_form_fields_do_not_collide_within_a_process():
    """Form data is merged into the process data at top level: two forms of one process may share a field
    only when it means the same thing (the scanned label)."""
    for path in DIAGRAMS:
        process = executable_process(path)
        seen = {}
        for task in xp(process, "./bpmn:userTask"):
            schema_file = properties(task)["formJsonSchemaFilename"]
            for field in form_schema(schema_file)["properties"]:
                if field != "scanned_coi" and field in seen and seen[field] != schema_file:
                    pytest.fail(f"{path.name}: {field} is in {seen[field]} and {schema_file}")
                seen[field] = schema_file


def test_autologous_conventions():
    path = PROCESSES / "autologous-car-t.bpmn"
    process = executable_process(path)
    assert process.get("id") == "autologous_car_t" and process.get("name") == "Autologous CAR-T"
    assert {lane.get("name") for lane in xp(process, ".//bpmn:lane")} == ROLES
    nodes = {el.get("id"): el for el in flow_nodes(process)}

    def form_fields(tid):
        return form_schema(properties(nodes[tid])["formJsonSchemaFilename"])["properties"]

    assert lane_of(process, "Task_QaRelease") == ["QA"]
    assert properties(nodes["Task_QaRelease"])["signature"] == "release_decision: released=approval, rejected=rejection"
    assert lane_of(process, "Task_PhysicianDecision") == ["Coordinator"]
    assert properties(nodes["Task_PhysicianDecision"])["signature"] == "responsibility"
    signed = {tid for tid, el in nodes.items() if "signature" in properties(el)}
    assert lane_of(process, "Task_ExcursionAssessment") == ["QA"]
    assert properties(nodes["Task_ExcursionAssessment"])["signature"] == (
        "excursion_disposition: use=approval, discard=rejection"
    )
    assert signed == {"Task_QaRelease", "Task_PhysicianDecision", "Task_ExcursionAssessment"}
    scanned = {
        tid
        for tid, el in nodes.items()
        if etree.QName(el).localname == "userTask" and "scanned_coi" in form_fields(tid)
    }
    assert {"Task_ReceiveAtManufacturing", "Task_ReceiveAtCentre", "Task_BedsideCheck"} <= scanned
    assert properties(nodes["Task_AwaitFreshDelivery"])["conditionRange"] == "2..8"
    assert properties(nodes["Task_AwaitReturnDelivery"])["conditionRange"] == "-196..-150"
    # the chain of identity is assigned once, right after enrolment
    coi_tasks = xp(
        process, "./bpmn:serviceTask[bpmn:extensionElements/spiffworkflow:serviceTaskOperator[@id='coi.assign']]"
    )
    assert [t.get("id") for t in coi_tasks] == ["Task_AssignCoi"]
    assert xp(process, "./bpmn:sequenceFlow[@sourceRef='Task_Enrolment']/@targetRef") == ["Task_AssignCoi"]
    # the slots named on the scheduling form are booked right after it, into the server's `bookings`
    assert xp(process, "./bpmn:sequenceFlow[@sourceRef='Task_Scheduling']/@targetRef") == ["Task_BookSlots"]
    (book,) = xp(nodes["Task_BookSlots"], ".//spiffworkflow:serviceTaskOperator")
    assert (book.get("id"), book.get("resultVariable")) == ("slot.book", "bookings")
    # the booked manufacturing start times a warning while the material waits for its pickup
    (not_left,) = xp(process, "./bpmn:boundaryEvent[@attachedToRef='Event_CourierPickedUp']")
    assert 'bookings["manufacturing"]["start"]' in xp(not_left, ".//bpmn:timeDate")[0].text
    # the excursion on the return leg is caught while waiting for delivery
    (excursion,) = xp(process, "./bpmn:boundaryEvent[@attachedToRef='Task_AwaitReturnDelivery']")
    assert xp(excursion, "./bpmn:messageEventDefinition/@messageRef") == ["Message_condition_excursion"]


def test_lymphodepletion_only_after_availability_is_confirmed():
    """Structural rule: every path from the start to lymphodepletion passes product availability."""
    process = executable_process(PROCESSES / "autologous-car-t.bpmn")
    successors = {}
    for f in xp(process, "./bpmn:sequenceFlow"):
        successors.setdefault(f.get("sourceRef"), []).append(f.get("targetRef"))
    for b in xp(process, "./bpmn:boundaryEvent"):
        successors.setdefault(b.get("attachedToRef"), []).append(b.get("id"))
    (start,) = xp(process, "./bpmn:startEvent/@id")

    def reachable(blocked):
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node in seen or node == blocked:
                continue
            seen.add(node)
            todo.extend(successors.get(node, []))
        return seen

    assert "Task_StartLymphodepletion" in reachable(None)
    assert "Task_StartLymphodepletion" not in reachable("Task_ConfirmAvailability")
    assert "Task_ConfirmAvailability" not in reachable("Task_ReceiveAtCentre")


# --------------------------------------------------------------------------------------- executable paths


class RecordingServices(PythonScriptEngine):
    """Answers service tasks locally and records them (operator id, evaluated parameters); expressions see
    ``datetime`` and ``timedelta`` as in Tether's sandbox."""

    def __init__(self):
        super().__init__(environment=TaskDataEnvironment({"datetime": datetime, "timedelta": timedelta}))
        self.calls = []

    def call_service(self, task, operation_name, operation_params):
        params = {name: param["value"] for name, param in operation_params.items()}
        self.calls.append((task.task_spec.bpmn_id, operation_name, params))
        if operation_name == "coi.assign":
            return json.dumps({"coi": COI})
        if operation_name == "slot.book":  # manufacturing booked to start three days from now
            start = datetime.now(UTC) + timedelta(days=3)
            return json.dumps({"manufacturing": {"slot_id": "slot-mfg", "site": "MFG-1", "start": start.isoformat()}})
        return "{}"


class Clock:
    """Shifts the clock SpiffWorkflow's timer event definitions read, so timers can come due."""

    def __init__(self):
        self.offset = timedelta(0)
        clock = self

        class ShiftedDatetime(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.now(tz) + clock.offset

        self.datetime = ShiftedDatetime


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(timer_module, "datetime", c.datetime)
    return c


class Therapy:
    """Drives one process instance the way the engine would: forms, messages and the clock."""

    def __init__(self, path, clock):
        process_id = executable_process(path).get("id")
        parser = parse(path)
        self.services = RecordingServices()
        self.clock = clock
        self.workflow = BpmnWorkflow(
            parser.get_spec(process_id), parser.get_subprocess_specs(process_id), script_engine=self.services
        )
        self.log = []
        self.workflow.do_engine_steps()

    # -- what the therapy waits for
    def ready(self):
        tasks = self.workflow.get_tasks(state=TaskState.READY, manual=True)
        return sorted(t.task_spec.bpmn_id for t in tasks)

    def waiting_messages(self):
        events = self.workflow.waiting_events()
        return sorted(e.name for e in events if e.event_type == "MessageEventDefinition")

    def reached(self, bpmn_id):
        return any(t.task_spec.bpmn_id == bpmn_id for t in self.workflow.get_tasks(state=TaskState.COMPLETED))

    # -- what people and systems do
    def complete(self, bpmn_id, **changes):
        tasks = [
            t for t in self.workflow.get_tasks(state=TaskState.READY, manual=True) if t.task_spec.bpmn_id == bpmn_id
        ]
        assert len(tasks) == 1, f"{bpmn_id} is not ready; ready: {self.ready()}"
        task = tasks[0]
        schema_file = task.task_spec.extensions["properties"]["formJsonSchemaFilename"]
        data = {**FORM_DATA[schema_file], **changes}
        validator = jsonschema.Draft202012Validator(
            form_schema(schema_file), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(data)
        task.set_data(**data)
        task.run()
        self.log.append(bpmn_id)
        self.workflow.do_engine_steps()

    def message(self, name, payload=None):
        waiting = self.waiting_messages()
        assert name in waiting, f"not waiting for {name}; waiting for {waiting}"
        self.workflow.send_event(BpmnEvent(MessageEventDefinition(name), payload or {}))
        self.log.append(name)
        self.workflow.do_engine_steps()

    def advance(self, **delta):
        self.clock.offset += timedelta(**delta)
        self.workflow.refresh_timers()
        self.workflow.do_engine_steps()

    def notifications(self):
        return [(call[2]["role"], call[0]) for call in self.services.calls if call[1] == "notify"]


AUTOLOGOUS = PROCESSES / "autologous-car-t.bpmn"
ALLOGENEIC = PROCESSES / "allogeneic.bpmn"


def to_manufacturing_receipt(t):
    assert t.ready() == ["Task_Enrolment"]
    t.complete("Task_Enrolment")
    assert t.services.calls[0] == ("Task_AssignCoi", "coi.assign", {})
    t.complete("Task_Scheduling")
    t.complete("Task_Apheresis")
    assert t.ready() == [] and t.waiting_messages() == ["courier.picked_up"]
    t.message("courier.picked_up", {"carrier": "Cryo Courier", "tracking": "CC-1"})
    assert t.waiting_messages() == ["shipment.delivered", "shipment.lost"]
    t.message("shipment.delivered", {"tracking": "CC-1", "delivered_at": "2026-11-17T07:50:00Z"})
    assert t.ready() == ["Task_ReceiveAtManufacturing"]


def manufacture_and_test(t, qc_result):
    t.message("mes.manufacturing_started", {"batch": "B-26-0413"})
    t.message("mes.manufacturing_completed", {"batch": "B-26-0413"})
    assert t.waiting_messages() == ["qc.results"]
    t.message("qc.results", {"result": qc_result, "batch": "B-26-0413"})


def return_and_infuse(t):
    assert t.waiting_messages() == ["return.picked_up"]
    t.message("return.picked_up", {"tracking": "CC-2"})
    assert t.waiting_messages() == ["condition.excursion", "return.delivered"]
    t.message("return.delivered", {"tracking": "CC-2"})
    receive_and_infuse(t)


def receive_and_infuse(t):
    t.complete("Task_ReceiveAtCentre")
    assert t.ready() == ["Task_ConfirmAvailability"]
    t.complete("Task_ConfirmAvailability")
    t.complete("Task_StartLymphodepletion")
    t.complete("Task_BedsideCheck")
    t.complete("Task_RecordInfusion")
    assert not t.workflow.completed and t.ready() == []
    t.advance(days=27)
    assert t.ready() == [], "the follow-up is not due before day 28"
    t.advance(days=1, minutes=1)
    t.complete("Task_Day28FollowUp")


HAPPY_PATH = [
    "Task_Enrolment",
    "Task_Scheduling",
    "Task_Apheresis",
    "courier.picked_up",
    "shipment.delivered",
    "Task_ReceiveAtManufacturing",
    "mes.manufacturing_started",
    "mes.manufacturing_completed",
    "qc.results",
    "Task_QaRelease",
    "return.picked_up",
    "return.delivered",
    "Task_ReceiveAtCentre",
    "Task_ConfirmAvailability",
    "Task_StartLymphodepletion",
    "Task_BedsideCheck",
    "Task_RecordInfusion",
    "Task_Day28FollowUp",
]


def test_autologous_happy_path_runs_to_completion(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "pass")
    assert t.ready() == ["Task_QaRelease"]
    t.complete("Task_QaRelease")
    return_and_infuse(t)

    assert t.workflow.completed
    assert t.log == HAPPY_PATH
    assert t.reached("EndEvent_TherapyCompleted")
    assert t.notifications() == [
        ("manufacturing", "Task_NotifyManufacturingSlot"),
        ("logistics", "Task_NotifyCourierPickup"),
        ("qa", "Task_NotifyQaReleaseReview"),
        ("logistics", "Task_NotifyReturnPickup"),
        ("coordinator", "Task_NotifyProductShipped"),
    ]
    data = t.workflow.last_task.data
    assert data["coi_assignment"] == {"coi": COI}
    assert data["qc"] == {"result": "pass", "batch": "B-26-0413"}
    assert data["fresh_delivery"]["tracking"] == "CC-1" and data["return_delivery"] == {"tracking": "CC-2"}
    assert data["release_decision"] == "released" and data["response_assessment"] == "complete_response"
    # no escalation fired on time
    for escalation in (
        "Task_NotifyFreshDeliveryOverdue",
        "Task_NotifyManufacturingOverdue",
        "Task_NotifyInfusionWindow",
        "Task_NotifyThawToInfusion",
    ):
        assert not t.reached(escalation)


def test_messages_are_refused_out_of_order(clock):
    t = Therapy(AUTOLOGOUS, clock)
    t.complete("Task_Enrolment")
    assert "shipment.delivered" not in t.waiting_messages()
    with pytest.raises(Exception, match="not waiting"):
        t.workflow.send_event(BpmnEvent(MessageEventDefinition("shipment.delivered"), {}))


def reject_at_receipt(t):
    t.complete(
        "Task_ReceiveAtManufacturing",
        receipt_decision="rejected",
        bags_intact=False,
        rejection_reason="Bag leaking on arrival",
    )


def booked_with(t):
    """The reason code each ``slot.book`` call was made with, in order."""
    return [params.get("reason_code") for _task, operator, params in t.services.calls if operator == "slot.book"]


def test_material_rejected_at_receipt_then_no_new_collection_ends_the_therapy(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    reject_at_receipt(t)
    assert t.notifications()[-1] == ("coordinator", "Task_NotifyMaterialRejected")
    assert t.ready() == ["Task_RecollectionDecision"]
    t.complete("Task_RecollectionDecision", recollection_decision="end_therapy")
    assert t.workflow.completed
    assert t.reached("EndEvent_MaterialRejected") and not t.reached("EndEvent_TherapyCompleted")


def test_rejected_material_is_collected_again_under_the_same_coi_and_the_therapy_completes(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    reject_at_receipt(t)
    t.complete("Task_RecollectionDecision", recollection_decision="recollect")
    assert t.ready() == ["Task_Scheduling"]
    t.complete("Task_Scheduling")
    t.complete("Task_Apheresis", din="G123498654322")
    t.message("courier.picked_up", {"carrier": "Cryo Courier", "tracking": "CC-3"})
    t.message("shipment.delivered", {"tracking": "CC-3"})
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "pass")
    t.complete("Task_QaRelease")
    return_and_infuse(t)
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")
    assert [c for c in t.services.calls if c[1] == "coi.assign"] == [("Task_AssignCoi", "coi.assign", {})]
    assert booked_with(t) == [None, "RECOLLECTION"]  # the second booking moves the first, with its reason
    assert t.log.count("Task_Apheresis") == 2 and t.workflow.last_task.data["din"] == "G123498654322"


def test_material_lost_in_transit_leads_to_the_decision_on_a_new_collection(clock):
    t = Therapy(AUTOLOGOUS, clock)
    t.complete("Task_Enrolment")
    t.complete("Task_Scheduling")
    t.complete("Task_Apheresis")
    t.message("courier.picked_up", {"carrier": "Cryo Courier", "tracking": "CC-1"})
    t.message("shipment.lost", {"tracking": "CC-1", "reason": "Shipper damaged in a road accident"})
    assert t.ready() == ["Task_RecollectionDecision"] and t.waiting_messages() == []
    t.advance(hours=25)
    assert not t.reached("Task_NotifyFreshDeliveryOverdue"), "the lost shipment's delivery clock stopped"
    t.complete("Task_RecollectionDecision", recollection_decision="recollect")
    assert t.ready() == ["Task_Scheduling"]


def test_sent_back_to_scheduling_before_the_collection_rebooks_with_the_reason(clock):
    t = Therapy(AUTOLOGOUS, clock)
    t.complete("Task_Enrolment")
    t.complete("Task_Scheduling")
    assert t.ready() == ["Task_Apheresis"] and t.waiting_messages() == ["therapy.reschedule"]
    t.message("therapy.reschedule", {"reason_code": "PATIENT_REQUEST", "reason": "Family event"})
    assert t.ready() == ["Task_Scheduling"]
    t.complete("Task_Scheduling")
    t.complete("Task_Apheresis")
    assert booked_with(t) == [None, "PATIENT_REQUEST"]
    assert t.waiting_messages() == ["courier.picked_up"], "once collected, it is not sent back any more"


def test_qc_fail_then_remanufacture_then_pass_completes(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "fail")
    assert t.ready() == ["Task_PhysicianDecision"]
    t.complete("Task_PhysicianDecision", physician_decision="remanufacture")
    assert t.waiting_messages() == ["mes.manufacturing_started"]
    manufacture_and_test(t, "pass")
    t.complete("Task_QaRelease")
    return_and_infuse(t)
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")
    assert t.log.count("mes.manufacturing_started") == 2 and t.log.count("qc.results") == 2
    assert ("coordinator", "Task_NotifyOutOfSpecification") in t.notifications()
    assert ("manufacturing", "Task_NotifyRemanufacture") in t.notifications()


def test_qc_fail_then_end_therapy(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "fail")
    t.complete(
        "Task_PhysicianDecision",
        physician_decision="end_therapy",
        physician_decision_rationale="Patient no longer fit for treatment.",
    )
    assert t.workflow.completed
    assert t.reached("EndEvent_TherapyEnded") and not t.reached("Task_QaRelease")


def test_release_rejected_then_infuse_under_exception(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "pass")
    t.complete("Task_QaRelease", release_decision="rejected", release_comment="Sterility sample invalid.")
    assert t.ready() == ["Task_PhysicianDecision"]
    t.complete("Task_PhysicianDecision", physician_decision="infuse_under_exception")
    return_and_infuse(t)
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")


def to_return_leg(t):
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "pass")
    t.complete("Task_QaRelease")
    t.message("return.picked_up", {"tracking": "CC-2"})


def test_excursion_on_return_leg_quarantine_then_discard(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_return_leg(t)
    t.message("condition.excursion", {"temperature_c": -131.0, "range": "-196..-150"})
    assert t.notifications()[-1] == ("qa", "Task_NotifyExcursion")
    assert t.waiting_messages() == ["return.delivered"]
    t.message("return.delivered", {"tracking": "CC-2"})
    t.complete("Task_QuarantineProduct")
    assert t.ready() == ["Task_ExcursionAssessment"]
    t.complete("Task_ExcursionAssessment")
    assert t.workflow.completed
    assert t.reached("EndEvent_ProductDiscarded") and not t.reached("Task_ReceiveAtCentre")
    assert t.workflow.last_task.data["excursion"]["temperature_c"] == -131.0


def test_excursion_on_return_leg_assessed_usable_continues(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_return_leg(t)
    t.message("condition.excursion", {"temperature_c": -149.0})
    t.message("return.delivered", {"tracking": "CC-2"})
    t.complete("Task_QuarantineProduct")
    t.complete("Task_ExcursionAssessment", excursion_disposition="use")
    receive_and_infuse(t)
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")


def test_late_fresh_delivery_escalates_without_interrupting(clock):
    t = Therapy(AUTOLOGOUS, clock)
    t.complete("Task_Enrolment")
    t.complete("Task_Scheduling")
    t.complete("Task_Apheresis")
    t.message("courier.picked_up")
    t.advance(hours=23)
    assert not t.reached("Task_NotifyFreshDeliveryOverdue")
    t.advance(hours=2)
    assert t.reached("Task_NotifyFreshDeliveryOverdue") and t.reached("EndEvent_FreshDeliveryEscalated")
    assert t.notifications()[-1] == ("logistics", "Task_NotifyFreshDeliveryOverdue")
    assert not t.workflow.completed and t.waiting_messages() == ["shipment.delivered", "shipment.lost"]
    t.message("shipment.delivered")
    t.complete("Task_ReceiveAtManufacturing")
    manufacture_and_test(t, "pass")
    t.complete("Task_QaRelease")
    return_and_infuse(t)
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")


def test_manufacturing_infusion_window_and_thaw_escalations(clock):
    t = Therapy(AUTOLOGOUS, clock)
    to_manufacturing_receipt(t)
    t.complete("Task_ReceiveAtManufacturing")
    t.message("mes.manufacturing_started")
    t.advance(days=29)
    assert t.reached("Task_NotifyManufacturingOverdue")
    assert t.waiting_messages() == ["mes.manufacturing_completed"]
    t.message("mes.manufacturing_completed")
    t.message("qc.results", {"result": "pass"})
    t.complete("Task_QaRelease")
    t.message("return.picked_up")
    t.message("return.delivered")
    t.complete("Task_ReceiveAtCentre")
    t.complete("Task_ConfirmAvailability")
    t.complete("Task_StartLymphodepletion")
    t.advance(days=15)
    assert t.reached("Task_NotifyInfusionWindow") and t.ready() == ["Task_BedsideCheck"]
    t.complete("Task_BedsideCheck")
    t.advance(minutes=31)
    assert t.reached("Task_NotifyThawToInfusion") and t.ready() == ["Task_RecordInfusion"]
    t.complete("Task_RecordInfusion")
    t.advance(days=29)
    t.complete("Task_Day28FollowUp")
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")


def test_allogeneic_happy_path_runs_to_completion(clock):
    t = Therapy(ALLOGENEIC, clock)
    assert t.ready() == ["Task_OrderFromInventory"]
    t.complete("Task_OrderFromInventory")
    assert t.ready() == ["Task_AllocateLot"]
    assert not [c for c in t.services.calls if c[1] == "coi.assign"], "the COI is assigned at allocation"
    t.complete("Task_AllocateLot")
    assert ("Task_AssignCoi", "coi.assign", {}) in t.services.calls
    assert t.waiting_messages() == ["shipment.picked_up"]
    t.message("shipment.picked_up", {"tracking": "CC-9"})
    t.message("shipment.delivered", {"tracking": "CC-9"})
    t.complete("Task_ReceiveAtSite")
    t.complete("Task_BedsideCheck")
    t.complete("Task_RecordInfusion")
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")
    assert t.log == [
        "Task_OrderFromInventory",
        "Task_AllocateLot",
        "shipment.picked_up",
        "shipment.delivered",
        "Task_ReceiveAtSite",
        "Task_BedsideCheck",
        "Task_RecordInfusion",
    ]
    assert t.workflow.last_task.data["coi_assignment"] == {"coi": COI}
    assert not t.reached("Task_NotifyDeliveryOverdue")


def test_allogeneic_late_delivery_escalates_without_interrupting(clock):
    t = Therapy(ALLOGENEIC, clock)
    t.complete("Task_OrderFromInventory")
    t.complete("Task_AllocateLot")
    t.message("shipment.picked_up")
    t.advance(hours=49)
    assert t.reached("Task_NotifyDeliveryOverdue") and t.waiting_messages() == ["shipment.delivered"]
    t.message("shipment.delivered")
    t.complete("Task_ReceiveAtSite")
    t.complete("Task_BedsideCheck")
    t.complete("Task_RecordInfusion")
    assert t.workflow.completed and t.reached("EndEvent_TherapyCompleted")


def test_allogeneic_conventions():
    path = PROCESSES / "allogeneic.bpmn"
    process = executable_process(path)
    assert process.get("id") == "allogeneic" and process.get("name") == "Allogeneic off-the-shelf"
    assert properties(process)["conditionRange"] == "-196..-150"
    nodes = {el.get("id"): el for el in flow_nodes(process)}
    assert lane_of(process, "Task_OrderFromInventory") == ["Coordinator"]
    assert lane_of(process, "Task_AllocateLot") == ["Manufacturing"]
    assert xp(process, "./bpmn:sequenceFlow[@sourceRef='Task_AllocateLot']/@targetRef") == ["Task_AssignCoi"]
    assert properties(nodes["Task_AwaitDelivery"])["conditionRange"] == "-196..-150"
    for tid in ("Task_ReceiveAtSite", "Task_BedsideCheck"):
        schema = form_schema(properties(nodes[tid])["formJsonSchemaFilename"])
        assert "scanned_coi" in schema["properties"] and "scanned_coi" in schema["required"]


# ------------------------------------------------------------------------------ typed messages (payloadSchema)
SERVER_SENT = {"therapy.reschedule"}  # sent by the server itself (POST /therapies/{id}/reschedule): no schema


def message_schema(name_or_file: str):
    schema = load_json(FORMS / name_or_file)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def bundled_message_schemas() -> dict[str, str]:
    """Message name -> payloadSchema file over both bundled diagrams (one file per message)."""
    out: dict[str, str] = {}
    for path in DIAGRAMS:
        process = executable_process(path)
        names = {m.get("id"): m.get("name") for m in xp(load_tree(path), "/bpmn:definitions/bpmn:message")}
        catchers = xp(
            process,
            ".//bpmn:receiveTask | .//*[self::bpmn:intermediateCatchEvent or self::bpmn:boundaryEvent or "
            "self::bpmn:startEvent][bpmn:messageEventDefinition]",
        )
        for el in catchers:
            ref = el.get("messageRef") or xp(el, "./bpmn:messageEventDefinition/@messageRef")[0]
            name, schema = names[ref], properties(el).get("payloadSchema")
            if name in SERVER_SENT:
                assert schema is None, f"{el.get('id')}: {name} is the server's own message"
                continue
            assert schema and (FORMS / schema).is_file(), f"{path.name} {el.get('id')}: no payloadSchema for {name}"
            assert out.setdefault(name, schema) == schema, f"{name}: one schema in every diagram"
    return out


def test_every_message_the_bundled_diagrams_wait_for_declares_a_payload_schema():
    assert bundled_message_schemas() == {
        "courier.picked_up": "courier-picked-up.message.json",
        "shipment.delivered": "shipment-delivered.message.json",
        "shipment.lost": "shipment-lost.message.json",
        "mes.manufacturing_started": "mes-manufacturing-started.message.json",
        "mes.manufacturing_completed": "mes-manufacturing-completed.message.json",
        "qc.results": "qc-results.message.json",
        "return.picked_up": "return-picked-up.message.json",
        "return.delivered": "return-delivered.message.json",
        "condition.excursion": "condition-excursion.message.json",
        "shipment.picked_up": "shipment-picked-up.message.json",
    }
    assert sorted(set(bundled_message_schemas().values())) == sorted(p.name for p in FORMS.glob("*.message.json"))


def test_every_message_schema_is_documented_and_its_examples_pass():
    for path in sorted(FORMS.glob("*.message.json")):
        schema = load_json(path)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object" and schema["title"] and schema["description"], path.name
        assert "additionalProperties" not in schema, f"{path.name}: real systems send more fields; they are kept"
        assert set(schema.get("required", [])) <= set(schema["properties"])
        assert len(schema.get("required", [])) <= 1, f"{path.name}: keep required fields few"
        for name, prop in schema["properties"].items():
            assert prop.get("title") and prop.get("description"), f"{path.name}: {name}"
        assert schema["examples"], path.name
        for example in schema["examples"]:
            assert list(message_schema(path.name).iter_errors(example)) == [], path.name


def sent_payloads() -> list[tuple[str, str, object]]:
    """(where, message name, payload) of every message the demo, the walkthrough script and the integration guide
    send to the bundled processes."""
    from server.demo_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH

    sent = [
        ("demo", step[1], step[2]) for step in (*AUTOLOGOUS_HAPPY_PATH, *ALLOGENEIC_HAPPY_PATH) if step[0] == "message"
    ]
    walkthrough = (ROOT / "scripts" / "walkthrough").read_text()
    sent += [("walkthrough", n, json.loads(p)) for n, p in re.findall(r"^message ([\w.]+) '(.*)'$", walkthrough, re.M)]
    guide = (ROOT / "docs" / "integration.md").read_text()
    sent += [("integration.md", n, json.loads(p)) for n, p in re.findall(r"^msg ([\w.]+) '(.*)' \S+$", guide, re.M)]
    return sent


def test_the_payloads_the_demo_and_the_guides_send_pass_the_schemas():
    schemas = bundled_message_schemas()
    sent = sent_payloads()
    assert {where for where, _name, _payload in sent} == {"demo", "walkthrough", "integration.md"}
    for where, name, payload in sent:
        errors = [e.message for e in message_schema(schemas[name]).iter_errors(payload)]
        assert errors == [], (where, name, payload)


def test_a_courier_pickup_without_its_tracking_number_fails_its_schema():
    errors = [e.message for e in message_schema("courier-picked-up.message.json").iter_errors({"courier": "X"})]
    assert errors == ["'tracking' is a required property"]
    qc = message_schema("qc-results.message.json")
    assert [e.message for e in qc.iter_errors({"result": "passed"})] == ["'passed' is not one of ['pass', 'fail']"]


def test_docs_list_every_bundled_message_with_its_fields_and_example():
    page = (ROOT / "docs" / "messages.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### `([\w.]+)`\n(.*?)(?=^### |\Z)", page, re.M | re.S))
    for name, file in bundled_message_schemas().items():
        schema, section = load_json(FORMS / file), sections[name]
        assert f"`forms/{file}`" in section, name
        for field in schema["properties"]:
            marked = f"| `{field}` **required** |" if field in schema.get("required", []) else f"| `{field}` |"
            assert marked in section, (name, field)
        [example] = re.findall(r"```json\n(.*?)\n```", section, re.S)
        assert json.loads(example) == schema["examples"][0], name
