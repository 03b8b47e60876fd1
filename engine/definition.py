"""A deployable process definition: the parsed SpiffWorkflow spec plus what Tether reads from the XML.

``load_definition`` turns uploaded bytes into a ``Definition`` or raises ``DefinitionInvalid`` with the
element id and line. ``Definition.to_document`` / ``Definition.from_document`` store the spec once per
version so that instance states never carry it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from lxml import etree

from . import spiff_patches
from .bpmn_xml import NS, SPIFF_NS, ElementInfo, element_at_line, index_process, line_of, parse_bpmn
from .calls import CalledDefinition, bind_calls, in_file_subprocess_specs
from .errors import DefinitionInvalid, EngineError, UnsafeCode

if TYPE_CHECKING:
    from .decisions import DecisionFile

# Roles whose members may complete user tasks; a lane names one of them.
TASK_ROLES = ("coordinator", "manufacturing", "logistics", "qa", "integrator", "admin", "planner")
# The parties of a therapy: the sites that act in it. A user task belongs to one (its own ``party`` property,
# else its lane's, else the treatment centre's).
PARTIES = ("treatment", "apheresis", "manufacturing", "logistics")
DEFAULT_PARTY = "treatment"
# Lead times a process may declare (process properties ``leadTime.<name>``, "MIN/MAX" or "MAX" ISO 8601
# durations): from the end of the collection to the start of manufacturing, and from the end of manufacturing
# to the start of the infusion.
LEAD_TIMES = ("apheresisToManufacturing", "manufacturingToInfusion")
SIGNATURE_MEANINGS = ("approval", "rejection", "review", "responsibility", "authorship", "verification")
# A signature whose meaning follows a decision: ``field: value=meaning, value=meaning`` (the form's field, then
# each of its values with the meaning a signature of that choice carries).
_SIGNATURE_BY_DECISION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)$", re.DOTALL)
# What a task's ``evidence`` property may name besides messages: the therapy's records a decision rests on.
EVIDENCE_RECORDS = ("conditions", "custody", "shipments", "alerts")
# The phase of a therapy's journey an activity belongs to (its ``phase`` property, else its lane's): a short
# lowercase word or hyphenated words. These are the phases the bundled diagrams use, in journey order (the
# control tower lists them in this order, any other phase after them).
PHASES = ("referral", "collection", "manufacturing", "release", "shipment", "infusion", "follow-up")
_PHASE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PHASE_MAX_LENGTH = 40
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)\s*$")
# Timer values as modelers write them: durations, cycles, and dates with an optional time and offset.
_PLAIN_ISO = re.compile(
    r"^(R\d*/)?(P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
    r"|\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?)"
    r"(/(P[0-9YMWDTHS.]+|\d{4}-\d{2}-\d{2}\S*))?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class UserTaskInfo:
    """What a user task asks of people: who, with which form, instructions and signature."""

    activity_id: str
    name: str
    role: str
    form: str | None = None
    ui_form: str | None = None
    instructions: str | None = None
    signature: str | None = None
    party: str = DEFAULT_PARTY
    # When the signature's meaning follows a decision: the form's field and each of its values' meaning
    # (``signature`` is then the first one's meaning).
    signature_field: str | None = None
    signature_meanings: dict[str, str] = field(default_factory=dict)
    # What the task's page shows beside the form (its ``evidence`` property): messages (by name, or by the part
    # of their names before the first dot) and records (EVIDENCE_RECORDS), in the order declared.
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActivityInfo:
    """A flow element's identity and the Tether properties set on it."""

    activity_id: str
    name: str
    kind: str
    line: int | None = None
    condition_range: tuple[float, float] | None = None
    attached_to: str | None = None
    interrupting: bool = True
    # For an element that catches a message: the JSON Schema file its payload must satisfy (``payloadSchema``).
    payload_schema: str | None = None
    # The phase of the journey a therapy is in while it waits here (``phase`` property, else its lane's), or None.
    phase: str | None = None


@dataclass
class DefinitionInfo:
    """Everything about a definition the server needs without touching SpiffWorkflow."""

    key: str
    name: str
    checksum: str
    user_tasks: dict[str, UserTaskInfo] = field(default_factory=dict)
    activities: dict[str, ActivityInfo] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    condition_range: tuple[float, float] | None = None
    # name -> (least, most) seconds between the two steps; see LEAD_TIMES
    lead_times: dict[str, tuple[float, float]] = field(default_factory=dict)
    # message name -> the JSON Schema file (among ``forms``) its payload must satisfy, for every message whose
    # catching elements declare ``payloadSchema``
    message_schemas: dict[str, str] = field(default_factory=dict)
    # business rule task id -> the id of the DMN decision it evaluates
    decisions: dict[str, str] = field(default_factory=dict)
    # call activity id -> {"key", "version"} of the deployed definition it calls (engine.calls), for every call
    # activity whose called process is not in the file, those of the called versions included
    called: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, dct: Mapping[str, Any]) -> DefinitionInfo:
        """Rebuild from ``to_dict`` output."""

        def _range(value):
            return tuple(value) if value else None

        return cls(
            key=dct["key"],
            name=dct["name"],
            checksum=dct["checksum"],
            user_tasks={k: UserTaskInfo(**v) for k, v in dct.get("user_tasks", {}).items()},
            activities={
                k: ActivityInfo(**{**v, "condition_range": _range(v.get("condition_range"))})
                for k, v in dct.get("activities", {}).items()
            },
            messages=list(dct.get("messages", [])),
            operators=list(dct.get("operators", [])),
            forms=list(dct.get("forms", [])),
            condition_range=_range(dct.get("condition_range")),
            lead_times={k: (float(v[0]), float(v[1])) for k, v in dct.get("lead_times", {}).items()},
            message_schemas=dict(dct.get("message_schemas", {})),
            decisions=dict(dct.get("decisions", {})),
            called={k: dict(v) for k, v in dct.get("called", {}).items()},
        )


@dataclass
class Definition:
    """A loaded definition: the spec SpiffWorkflow runs and the info the server reads."""

    info: DefinitionInfo
    spec: Any
    subprocess_specs: dict[str, Any]

    def to_document(self) -> dict:
        """The spec as a JSON-ready document, stored once per definition version."""
        from .serialization import spec_to_dict

        return spec_to_dict(self.spec, self.subprocess_specs)

    @classmethod
    def from_document(cls, info: DefinitionInfo, document: Mapping[str, Any]) -> Definition:
        """Restore a definition stored with ``to_document``."""
        from .serialization import spec_from_dict

        spiff_patches.apply()
        spec, subprocess_specs = spec_from_dict(document)
        return cls(info=info, spec=spec, subprocess_specs=subprocess_specs)


@dataclass(frozen=True)
class OperatorSignature:
    """The parameters an operator takes: those it ``requires`` and those it may be given besides."""

    requires: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()

    @property
    def takes(self) -> frozenset[str]:
        return self.requires | self.optional


@dataclass(frozen=True)
class MessageCatcher:
    """An element that waits for a named message: a receive task, an intermediate catch event, a boundary event or
    a message start event (``starts``: one of the process's own start events, which begins an instance)."""

    name: str
    activity_id: str
    starts: bool = False
    # Where the payload lands in the process data (the event's messageVariable, else the message's name).
    variable: str | None = None


def message_catchers(definition: Definition) -> list[MessageCatcher]:
    """Every element of ``definition`` that catches a message, in the order of the document."""
    from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
    from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
    from SpiffWorkflow.bpmn.specs.mixins.events.start_event import StartEvent

    found: dict[str, MessageCatcher] = {}
    top = set(definition.spec.task_specs)
    specs = [definition.spec, *definition.subprocess_specs.values()]
    for spec in specs:
        for name, task_spec in spec.task_specs.items():
            bpmn_id = getattr(task_spec, "bpmn_id", None)
            event = getattr(task_spec, "event_definition", None)
            if bpmn_id is None or bpmn_id in found or not isinstance(task_spec, CatchingEvent):
                continue
            if isinstance(event, MessageEventDefinition):
                starts = isinstance(task_spec, StartEvent) and spec is definition.spec and name in top
                variable = getattr(event, "message_var", None) or event.name
                found[bpmn_id] = MessageCatcher(event.name, bpmn_id, starts, variable)
            for event_id, inner in gateway_messages(task_spec).items():
                variable = getattr(inner, "message_var", None) or inner.name
                found.setdefault(event_id, MessageCatcher(inner.name, event_id, False, variable))
    activities = definition.info.activities

    def line(catcher: MessageCatcher) -> tuple[int, str]:
        activity = activities.get(catcher.activity_id)
        return (activity.line if activity and activity.line else 0, catcher.activity_id)

    return sorted(found.values(), key=line)


def gateway_messages(task_spec) -> dict[str, Any]:
    """For an event-based gateway, the message events after it by their element ids, with the message
    definitions SpiffWorkflow moved onto the gateway; empty for any other task spec."""
    from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
    from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition

    event = getattr(task_spec, "event_definition", None)
    if not isinstance(event, MultipleEventDefinition):
        return {}
    return {
        getattr(out, "bpmn_id", None) or out.name: inner
        for out, inner in zip(task_spec.outputs, event.event_definitions, strict=False)
        if isinstance(inner, MessageEventDefinition)
    }


def _field_choices(prop: Mapping[str, Any]) -> list[Any]:
    """The values a form field offers (its enum, its oneOf/anyOf of consts, or true and false); empty for a free
    field."""
    if prop.get("type") == "boolean":
        return [True, False]
    if isinstance(prop.get("enum"), list):
        return list(prop["enum"])
    choices = prop.get("oneOf") or prop.get("anyOf") or []
    if choices and all(isinstance(c, dict) and "const" in c for c in choices):
        return [c["const"] for c in choices]
    return []


def choice_text(value: Any) -> str:
    """A field's value as a signature declaration writes it (true/false for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def checksum(content: bytes, forms: Mapping[str, bytes] | None = None) -> str:
    """SHA-256 over the BPMN bytes and the uploaded forms, so an identical upload is recognised."""
    digest = hashlib.sha256(content)
    for name in sorted(forms or {}):
        digest.update(b"\0" + name.encode() + b"\0" + (forms or {})[name])
    return digest.hexdigest()


def parse_form(name: str, content: bytes) -> dict:
    """Parse one JSON Schema form file, refusing anything that is not a valid schema."""
    try:
        schema = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DefinitionInvalid(f"Form {name} is not valid JSON: {exc}", line=line, details={"form": name}) from None
    if not isinstance(schema, dict):
        raise DefinitionInvalid(f"Form {name} must be a JSON object (a JSON Schema).", details={"form": name})
    problem = _schema_problem(content)
    if problem is not None:
        raise DefinitionInvalid(f"Form {name} is not a valid JSON Schema: {problem}", details={"form": name})
    return schema


@functools.lru_cache(maxsize=512)
def _schema_problem(content: bytes) -> str | None:
    """Why a form file's JSON is not a valid JSON Schema, or None; kept by content, since checking a schema against
    the meta-schema costs a few milliseconds and every deploy of a version checks all of its forms again."""
    try:
        Draft202012Validator.check_schema(json.loads(content))
    except SchemaError as exc:
        return exc.message
    return None


def lead_times(properties: Mapping[str, str], *, element_id: str | None, line: int | None) -> dict:
    """The lead times among a process's properties (``leadTime.<name>``: "MIN/MAX" or "MAX"), in seconds."""
    from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

    out: dict[str, tuple[float, float]] = {}
    for key, text in properties.items():
        if not key.startswith("leadTime."):
            continue
        name = key.removeprefix("leadTime.")
        if name not in LEAD_TIMES:
            raise DefinitionInvalid(
                f"'{key}' names no lead time; use leadTime.{' or leadTime.'.join(LEAD_TIMES)}.",
                element_id=element_id,
                line=line,
            )
        parts = [p.strip() for p in (text or "").split("/")]
        try:
            seconds = [timedelta(**TimerEventDefinition.parse_iso_duration(p)).total_seconds() for p in parts]
        except Exception:  # noqa: BLE001 - any parse failure is the same mistake for the designer
            seconds = []
        if len(seconds) == 1:
            seconds = [0.0, seconds[0]]
        if len(seconds) != 2 or seconds[0] > seconds[1]:
            raise DefinitionInvalid(
                f"{key} = '{text}' is not a lead time: write the longest as an ISO 8601 duration (PT48H), or the "
                "shortest and the longest (P10D/P21D).",
                element_id=element_id,
                line=line,
            )
        out[name] = (seconds[0], seconds[1])
    return out


def parse_range(text: str, *, element_id: str | None, line: int | None) -> tuple[float, float]:
    """Parse a ``conditionRange`` value such as ``-196..-150``."""
    match = _RANGE.match(text or "")
    if not match:
        raise DefinitionInvalid(
            f"conditionRange '{text}' must look like LOW..HIGH in °C, e.g. 2..8.", element_id=element_id, line=line
        )
    low, high = float(match.group(1)), float(match.group(2))
    if low > high:
        raise DefinitionInvalid(
            f"conditionRange '{text}' has its low end above its high end.", element_id=element_id, line=line
        )
    return low, high


@contextmanager
def collected(problems: list[DefinitionInvalid] | None) -> Iterator[None]:
    """Around one check: a refusal is raised as usual, or, when ``problems`` is a list (the studio's check, which
    reports every problem it can), added to it so that the next check still runs."""
    try:
        yield
    except DefinitionInvalid as exc:  # UnsafeCode too
        if problems is None:
            raise
        problems.append(exc)


def normalise_timer_expression(expression: str) -> str:
    """Quote a plain ISO 8601 timer value (``PT24H``) so it reads as an expression; leave expressions alone."""
    text = (expression or "").strip()
    if _PLAIN_ISO.match(text):
        return repr(text.upper() if text.upper().startswith(("P", "R")) else text)
    return text


def load_definition(
    content: bytes,
    forms: Mapping[str, dict],
    operators: Iterable[str] | Mapping[str, OperatorSignature],
    decisions: Mapping[str, DecisionFile] | None = None,
    called: Mapping[str, CalledDefinition] | None = None,
    problems: list[DefinitionInvalid] | None = None,
) -> Definition:
    """Parse, validate and check ``content``; ``forms`` maps file names to parsed schemas, ``operators`` names the
    service operators a task may use (given with their signatures, a task's parameters are checked too: every
    required one given, none the operator does not take), ``decisions`` decision
    ids to the checked DMN files its business rule tasks may name (``engine.decisions.parse_decisions``), ``called``
    process keys to the deployed versions its call activities bind when the file does not hold the called process
    (``engine.calls``).

    Raises ``DefinitionInvalid`` (or ``UnsafeCode``) naming the element and line of the first problem. With
    ``problems`` (a list), every problem found after the diagram could be parsed is added to it instead, each
    check going on past it, so that the studio can pin each on its element; a problem that leaves nothing to check
    further (not XML, not BPMN, no executable process, a spec SpiffWorkflow cannot build) is still raised. The
    definition returned is then only good for reading what the checks found, never for running, unless
    ``problems`` stayed empty.
    """
    spiff_patches.apply()
    tree = parse_bpmn(content)
    _validate_schema(tree)
    processes = tree.getroot().xpath("./bpmn:process[@isExecutable='true']", namespaces=NS)
    if not processes:
        raise DefinitionInvalid('The diagram has no executable process: set isExecutable="true" on one process.')
    if len(processes) > 1:
        processes = [_refuse_several_pools(tree, processes)]
    _refuse_unsupported(tree, problems)
    _refuse_signals_from_outside(tree, problems)
    process = processes[0]
    key = process.get("id")
    for reserved in ("Start", "End", f"{key}.EndJoin"):
        clash = tree.getroot().xpath("//*[@id=$id]", id=reserved)
        if clash:
            raise DefinitionInvalid(
                f"The id '{reserved}' is reserved by the engine; rename the element.",
                element_id=reserved,
                line=clash[0].sourceline,
            )
    available = dict(decisions or {})
    used = _called_decisions(tree, available, problems)
    spec, subprocess_specs = _parse_specs(tree, key, {d: available[d] for d in set(used.values())})
    index = index_process(process)
    for other in tree.getroot().xpath("./bpmn:process", namespaces=NS):
        if other is not process:
            index.update({k: v for k, v in index_process(other).items() if k not in index})
    info = DefinitionInfo(key=key, name=process.get("name") or key, checksum="")
    info.decisions = used
    signatures = dict(operators) if isinstance(operators, Mapping) else {name: None for name in operators}
    _Checker(tree, index, info, forms, signatures, problems).check(spec, subprocess_specs)
    with collected(problems):
        bind_calls(tree, subprocess_specs, info, forms, called or {})
    return Definition(info=info, spec=spec, subprocess_specs=subprocess_specs)


def _refuse_several_pools(tree, processes):
    """The one executable process of a file whose other executable processes are only called from it (by call
    activities); otherwise refuse the file, saying how to split it: which pools (participants) run which process,
    one file per executable pool, and what becomes of the message flows between them."""
    root = tree.getroot()
    called = {(node.get("calledElement") or "").strip() for node in root.xpath("//bpmn:callActivity", namespaces=NS)}
    callers = [p for p in processes if p.get("id") not in called]
    if len(callers) == 1:
        return callers[0]
    processes = callers or processes
    pools = []
    for process in processes:
        participant = root.xpath(
            "./bpmn:collaboration/bpmn:participant[@processRef=$id]", namespaces=NS, id=process.get("id")
        )
        where = participant[0] if participant else process
        label = (
            f"pool {where.get('id')} (process {process.get('id')}" if participant else f"process {process.get('id')} ("
        )
        pools.append((where, f"{label}{', ' if participant else ''}line {where.sourceline})"))
    flows = root.xpath("./bpmn:collaboration/bpmn:messageFlow", namespaces=NS)
    named = f" (here {', '.join(f.get('id') for f in flows)})" if flows else ""
    second = pools[1][0]
    raise DefinitionInvalid(
        f"The diagram has {len(pools)} executable pools: {'; '.join(text for _node, text in pools)}. Split it: one "
        "file per executable pool; message flows become messages posted through POST /api/v1/messages"
        f"{named}, caught by a message event or receive task of the pool that waits for them. A pool Tether should "
        'not run (a partner\'s, such as a courier) may stay in the file with isExecutable="false" on its process.',
        element_id=second.get("id"),
        line=second.sourceline,
        details={"executable_processes": [p.get("id") for p in processes]},
    )


# Elements SpiffWorkflow parses but Tether cannot run, with what the modeler should do instead.
_UNSUPPORTED = (
    (
        "complexGateway",
        "a complex gateway, which Tether cannot run",
        "use an inclusive gateway (conditions on its outgoing flows) or an exclusive or parallel gateway",
    ),
    (
        "adHocSubProcess",
        "an ad-hoc subprocess, which Tether cannot run",
        "use a subprocess whose tasks follow sequence flows, or parallel user tasks after a parallel gateway",
    ),
    (
        "sendTask",
        "a send task, and Tether sends no messages from a diagram",
        "use a service task with the publish operator (an event for integrators) or the http operator; messages "
        "come in through POST /api/v1/messages",
    ),
    (
        "intermediateThrowEvent[bpmn:messageEventDefinition]",
        "a message throw event, and Tether sends no messages from a diagram",
        "use a service task with the publish operator (an event for integrators) or the http operator; messages "
        "come in through POST /api/v1/messages",
    ),
    (
        "endEvent[bpmn:messageEventDefinition]",
        "a message end event, and Tether sends no messages from a diagram",
        "end with a plain end event after a service task with the publish or http operator",
    ),
    (
        "dataStoreReference",
        "a data store, which Tether has no implementation for",
        "keep the value in the process data (a script or a form sets it) or read it with a service task",
    ),
    (
        "subProcess[@triggeredByEvent='true']",
        "an event subprocess, which Tether cannot wait on",
        "put the activities it may interrupt in a subprocess and attach the event to it as a boundary event "
        "(interrupting or not)",
    ),
    (
        "conditionalEventDefinition",
        "a conditional event, and Tether re-checks no condition while a therapy waits",
        "wait for a message that the system changing the value posts (POST /api/v1/messages), or for a timer",
    ),
    (
        "compensateEventDefinition",
        "a compensation event, which Tether cannot run",
        "undo the work on an explicit path: an error or escalation boundary event leading to the tasks that undo it",
    ),
    (
        "*[@isForCompensation='true']",
        "a compensation activity, which Tether cannot run",
        "connect it with sequence flows on the path that undoes the work",
    ),
    (
        "intermediateThrowEvent[bpmn:linkEventDefinition]",
        "a link event, which Tether cannot follow",
        "draw a sequence flow to where the link leads",
    ),
)


def _refuse_unsupported(tree, problems: list[DefinitionInvalid] | None = None) -> None:
    """Refuse, in the modeler's words, an element of the executable part of the file that Tether cannot run."""
    root = tree.getroot()
    for path, what, instead in _UNSUPPORTED:
        prefix = "" if path.startswith("*") else "bpmn:"
        for node in root.xpath(f"./bpmn:process[@isExecutable='true']//{prefix}{path}", namespaces=NS):
            owner = node if node.get("id") else node.getparent()
            with collected(problems):
                raise DefinitionInvalid(
                    f"{owner.get('id')} is {what}. Change it: {instead}.",
                    element_id=owner.get("id"),
                    line=owner.sourceline,
                )


def _refuse_signals_from_outside(tree, problems: list[DefinitionInvalid] | None = None) -> None:
    """Refuse an element waiting for a signal that the diagram throws nowhere: Tether delivers a signal only within
    one therapy, from a signal throw event of its own diagram, so such an element would wait forever."""
    root = tree.getroot()
    executable = "./bpmn:process[@isExecutable='true']"
    thrown = {
        node.get("signalRef")
        for node in root.xpath(
            f"{executable}//bpmn:intermediateThrowEvent/bpmn:signalEventDefinition"
            f"|{executable}//bpmn:endEvent/bpmn:signalEventDefinition",
            namespaces=NS,
        )
    }
    catching = (
        f"{executable}//bpmn:intermediateCatchEvent/bpmn:signalEventDefinition"
        f"|{executable}//bpmn:boundaryEvent/bpmn:signalEventDefinition"
        f"|{executable}//bpmn:startEvent/bpmn:signalEventDefinition"
    )
    for node in root.xpath(catching, namespaces=NS):
        if node.get("signalRef") not in thrown:
            owner = node.getparent()
            names = root.xpath("./bpmn:signal[@id=$id]/@name", namespaces=NS, id=node.get("signalRef"))
            name = names[0] if names else node.get("signalRef")
            with collected(problems):
                raise DefinitionInvalid(
                    f"{owner.get('id')} waits for the signal '{name}', which this diagram throws nowhere: "
                    "Tether delivers a signal only within one therapy, from a signal throw event of its own diagram. "
                    "Change it: for news from outside, catch a message (a message event or receive task) that the "
                    "sender posts through POST /api/v1/messages.",
                    element_id=owner.get("id"),
                    line=owner.sourceline,
                )


def _owner_id(node) -> str | None:
    """The id of the nearest enclosing element that has one (a condition's flow, a script's task). An extension
    element's ``id`` names a parameter or an operator, not a diagram element: a parameter's owner is its task."""
    for element in [node, *node.iterancestors()]:
        if element.get("id") and not str(element.tag).startswith(f"{{{SPIFF_NS}}}"):
            return element.get("id")
    return None


def _validate_schema(tree) -> None:
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
    from SpiffWorkflow.spiff.parser.process import VALIDATOR

    try:
        VALIDATOR.validate(tree.getroot())
    except ValidationException as exc:
        line = exc.line_number or None
        raise DefinitionInvalid(
            f"The diagram fails the BPMN 2.0 schema: {exc}", element_id=element_at_line(tree, line), line=line
        ) from None


def _called_decisions(
    tree, decisions: dict[str, DecisionFile], problems: list[DefinitionInvalid] | None = None
) -> dict[str, str]:
    """Each business rule task's decision id; a task naming none, or one no decision file holds, is refused. When
    collecting ``problems``, the task's problem is noted and an empty table stands in for its decision (added to
    ``decisions``), so that the rest of the diagram is still checked."""
    from .decisions import stand_in

    used: dict[str, str] = {}
    for node in tree.getroot().xpath("//bpmn:businessRuleTask", namespaces=NS):
        called = node.xpath("./bpmn:extensionElements/spiffworkflow:calledDecisionId", namespaces=NS)
        decision_id = (called[0].text or "").strip() if called else ""
        found = len(problems or [])
        with collected(problems):
            _check_called_decision(node, decision_id, called[0] if called else None, decisions)
        if problems is not None and len(problems) > found:
            if not decision_id:  # the parser reads the id from the XML: give the task a stand-in's
                decision_id = f"missing_decision_{node.get('id')}"
                extensions = node.find(f"{{{NS['bpmn']}}}extensionElements")
                if extensions is None:
                    extensions = etree.SubElement(node, f"{{{NS['bpmn']}}}extensionElements")
                element = called[0] if called else etree.SubElement(extensions, f"{{{SPIFF_NS}}}calledDecisionId")
                element.text = decision_id
            decisions.setdefault(decision_id, stand_in(decision_id))
        used[node.get("id")] = decision_id
    return used


def _check_called_decision(node, decision_id: str, called, decisions: Mapping[str, DecisionFile]) -> None:
    """Refuse a business rule task that names no decision, or one that no decision file holds."""
    if not decision_id:
        raise DefinitionInvalid(
            f"Business rule task {node.get('id')} names no decision: add "
            "<spiffworkflow:calledDecisionId>ID</spiffworkflow:calledDecisionId> to its extensionElements, with "
            "the id of a decision uploaded with the diagram (field 'decisions') or shipped in processes/.",
            element_id=node.get("id"),
            line=node.sourceline,
        )
    if decision_id not in decisions:
        known = ", ".join(sorted(d for d, f in decisions.items() if f.file)) or "none"
        raise DefinitionInvalid(
            f"Business rule task {node.get('id')} calls the decision '{decision_id}', which no decision file has "
            f"(upload its DMN file with the diagram in the field 'decisions'; decisions available: {known}).",
            element_id=node.get("id"),
            line=called.sourceline,
            details={"decision": decision_id},
        )


def _parse_specs(tree, key: str, decisions: Mapping[str, DecisionFile] | None = None):
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
    from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

    from .decisions import register

    parser = SpiffBpmnParser(validator=None)
    register(parser, decisions or {})
    try:
        parser.add_bpmn_xml(tree, filename=f"{key}.bpmn")
        spec = parser.get_spec(key)
        subprocess_specs = in_file_subprocess_specs(parser, key)
    except ValidationException as exc:
        element_id = getattr(exc, "id", None) or None
        line = getattr(exc, "line_number", None) or line_of(tree, element_id)
        raise DefinitionInvalid(f"The diagram is not executable: {exc}", element_id=element_id, line=line) from None
    except EngineError:
        raise
    except Exception as exc:  # SpiffWorkflow raises TypeError/KeyError/... on broken references
        raise DefinitionInvalid(
            f"The diagram is not executable: {type(exc).__name__}: {exc}. Check references between "
            "elements (sequence flows, attachedToRef, messageRef, calledElement)."
        ) from None
    return spec, subprocess_specs


_NS_XSI = {**NS, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
_CHECKED_ABOVE = " or ".join(
    f"self::bpmn:{tag}"
    for tag in (
        "conditionExpression",
        "condition",
        "completionCondition",
        "loopCardinality",
        "loopCondition",
        "activationCondition",
        "timeDuration",
        "timeDate",
        "timeCycle",
    )
)


@dataclass
class _Carrier:
    """Stands in for the task spec of an event whose definition an event-based gateway holds."""

    event_definition: Any


class _Checker:
    """Walks every task spec and records, or refuses, what Tether needs of it."""

    def __init__(
        self,
        tree,
        index: dict[str, ElementInfo],
        info: DefinitionInfo,
        forms: Mapping[str, dict],
        operators: Mapping[str, OperatorSignature | None],
        problems: list[DefinitionInvalid] | None = None,
    ):
        self.tree, self.index, self.info, self.forms, self.operators = tree, index, info, forms, operators
        self.problems = problems  # a list when every problem is collected (collected()), else None: raise the first
        self.catchers: list[tuple[str, str, str | None]] = []  # (message name, element id, payloadSchema)
        self.evidence: dict[str, tuple[str, ...]] = {}  # user task id -> its evidence property, checked at the end
        self.after_gateways: dict[str, str] = {}  # message event after an event-based gateway -> its message name

    def fail(self, message: str, element_id: str | None):
        raise DefinitionInvalid(message, element_id=element_id, line=self._line(element_id))

    def refuse(self, message: str, *, element_id: str | None, line: int | None) -> None:
        """One element's problem in a check over many elements: raised, or collected and the check goes on."""
        with self.each():
            raise DefinitionInvalid(message, element_id=element_id, line=line)

    def check(self, spec, subprocess_specs) -> None:
        process_info = self.index.get(self.info.key)
        if process_info and "conditionRange" in process_info.properties:
            with self.each():
                self.info.condition_range = parse_range(
                    process_info.properties["conditionRange"], element_id=self.info.key, line=process_info.line
                )
        if process_info:
            with self.each():
                self.info.lead_times = lead_times(
                    process_info.properties, element_id=self.info.key, line=process_info.line
                )
        self.check_references()
        self.check_no_idle_tasks()
        self.check_loop_data_items()
        self.check_all_code()
        for task_spec in self._all_task_specs(spec, subprocess_specs):
            self.after_gateways.update({k: d.name for k, d in gateway_messages(task_spec).items()})
        for task_spec in self._all_task_specs(spec, subprocess_specs):
            with self.each():
                self.check_task_spec(task_spec)
        self.check_payload_schemas()
        self.check_evidence()
        self.info.messages = sorted(set(self.info.messages))
        self.info.operators = sorted(set(self.info.operators))
        self.info.forms = sorted(set(self.info.forms))

    def each(self):
        """Around one check of one element: its problem is raised, or collected when collecting."""
        return collected(self.problems)

    @staticmethod
    def _all_task_specs(spec, subprocess_specs):
        yield from spec.task_specs.values()
        for sub in subprocess_specs.values():
            yield from sub.task_specs.values()

    def check_task_spec(self, task_spec) -> None:
        from SpiffWorkflow.spiff.specs.defaults import ServiceTask, UserTask

        bpmn_id = getattr(task_spec, "bpmn_id", None)
        if bpmn_id is None:
            return
        element = self.index.get(bpmn_id)
        kind = type(task_spec).__name__
        props = element.properties if element else {}
        condition_range = None
        if "conditionRange" in props:
            condition_range = parse_range(
                props["conditionRange"], element_id=bpmn_id, line=element.line if element else None
            )
        self.info.activities[bpmn_id] = ActivityInfo(
            activity_id=bpmn_id,
            name=task_spec.bpmn_name or bpmn_id,
            kind=kind,
            line=element.line if element else None,
            condition_range=condition_range,
            attached_to=element.attached_to if element else None,
            interrupting=element.cancel_activity if element else True,
            payload_schema=self.payload_schema(task_spec, bpmn_id, props),
            phase=self.phase(element, bpmn_id),
        )
        self.check_event_definition(task_spec, bpmn_id)
        if isinstance(task_spec, UserTask):
            self.check_user_task(task_spec, bpmn_id, element, props)
        if isinstance(task_spec, ServiceTask):
            self.check_service_task(task_spec, bpmn_id)

    def payload_schema(self, task_spec, bpmn_id: str, props: Mapping[str, str]) -> str | None:
        """The ``payloadSchema`` an element declares for the message it catches (a file among the forms), noted
        for ``check_payload_schemas``; refused on an element that catches no message and for an unknown file."""
        from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
        from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent

        schema = (props.get("payloadSchema") or "").strip() or None
        event = getattr(task_spec, "event_definition", None)
        message = (
            event.name if isinstance(task_spec, CatchingEvent) and isinstance(event, MessageEventDefinition) else None
        )
        if message is None and bpmn_id in self.after_gateways:
            message = self.after_gateways[bpmn_id]
        if schema and message is None:
            self.fail(
                f"{bpmn_id} declares the payloadSchema {schema}, but it catches no message; declare it on the "
                "receive task or message event that waits for the message.",
                bpmn_id,
            )
        if message is None or any(seen == bpmn_id for _name, seen, _schema in self.catchers):
            return schema
        if schema and schema not in self.forms:
            self.fail(
                f"{bpmn_id} declares the payloadSchema {schema} for the message '{message}', which was neither "
                "uploaded with the diagram nor shipped in forms/.",
                bpmn_id,
            )
        self.catchers.append((message, bpmn_id, schema))
        return schema

    def check_payload_schemas(self) -> None:
        """One schema per message: every element that catches a message declares the same ``payloadSchema``, or
        none does (a message reaches every element waiting for it, so it is checked against one schema)."""
        by_name: dict[str, list[tuple[int, str, str | None]]] = {}
        for name, bpmn_id, schema in self.catchers:
            by_name.setdefault(name, []).append((self._line(bpmn_id) or 0, bpmn_id, schema))
        for name, catchers in sorted(by_name.items()):
            with self.each():
                self.check_payload_schema(name, catchers)

    def check_payload_schema(self, name: str, catchers: list[tuple[int, str, str | None]]) -> None:
        """The one ``payloadSchema`` of the message ``name`` among the elements catching it."""
        catchers.sort()
        declared = {schema for _line, _id, schema in catchers}
        if len(declared) > 1:
            first = next(c for c in catchers if c[2] is not None)
            other = next(c for c in catchers if c[2] != first[2])

            def says(schema: str | None) -> str:
                return f"the payloadSchema {schema}" if schema else "no payloadSchema"

            self.fail(
                f"The message '{name}' is caught by {first[1]} with {says(first[2])} and by {other[1]} with "
                f"{says(other[2])}; every element that catches one message declares the same payloadSchema "
                "(or none does).",
                other[1],
            )
        schema = declared.pop()
        if schema:
            self.info.message_schemas[name] = schema
            self.info.forms.append(schema)

    def check_references(self) -> None:
        """Every boundary event sits on an existing activity; every flow joins existing elements."""
        root = self.tree.getroot()
        ids = set(root.xpath("//@id"))
        for node in root.xpath("//bpmn:boundaryEvent", namespaces=NS):
            if node.get("attachedToRef") not in ids:
                self.refuse(
                    f"Boundary event {node.get('id')} is attached to '{node.get('attachedToRef')}', which does "
                    "not exist.",
                    element_id=node.get("id"),
                    line=node.sourceline,
                )
        for node in root.xpath("//bpmn:sequenceFlow", namespaces=NS):
            for end in ("sourceRef", "targetRef"):
                if node.get(end) not in ids:
                    self.refuse(
                        f"Sequence flow {node.get('id')} has {end} '{node.get(end)}', which does not exist.",
                        element_id=node.get("id"),
                        line=node.sourceline,
                    )

    def check_no_idle_tasks(self) -> None:
        """Refuse tasks that nobody would ever do: a plain ``task`` and a ``manualTask`` wait for a person but
        appear in nobody's inbox, so a therapy reaching one would stay active with nothing to do."""
        for tag, instead in (
            ("task", "a userTask in the lane of the role that does it, or a scriptTask"),
            ("manualTask", "a userTask in the lane of the role that does it"),
        ):
            for node in self._executable_nodes(f"bpmn:{tag}"):
                self.refuse(
                    f"{node.get('id')} is a bpmn:{tag}, which Tether cannot run: nobody would be asked to do it "
                    f"and the therapy would wait forever. Make it {instead}.",
                    element_id=node.get("id"),
                    line=node.sourceline,
                )

    def _executable_nodes(self, path: str) -> list:
        """The elements matching ``path`` inside the executable process (a pool drawn only to be read, with
        isExecutable="false", is not run and not checked for what Tether runs)."""
        found = self.tree.getroot().xpath("./bpmn:process[@id=$id]", namespaces=NS, id=self.info.key)
        return found[0].xpath(f".//{path}", namespaces=NS) if found else []

    def check_loop_data_items(self) -> None:
        """A multi-instance task's item variables are named by their ids (SpiffWorkflow reads the ``id`` of an
        ``inputDataItem``/``outputDataItem``, not its ``name``): refuse an item whose name says otherwise."""
        for node in self._executable_nodes("bpmn:multiInstanceLoopCharacteristics/*"):
            tag = node.tag.rsplit("}", 1)[-1]
            if tag not in ("inputDataItem", "outputDataItem") or node.get("name") in (None, node.get("id")):
                continue
            task = node.getparent().getparent()
            self.refuse(
                f"The {tag} of {task.get('id')} has the id '{node.get('id')}' and the name '{node.get('name')}': the "
                "variable each instance uses is the item's id, so give the item the same id and name (both "
                f"'{node.get('name')}', unique in the file).",
                element_id=node.get("id"),
                line=node.sourceline,
            )

    def check_all_code(self) -> None:
        """Check every script and expression in the document, reachable from a start event or not."""
        root = self.tree.getroot()
        kinds = [
            ("//bpmn:script", True, "script"),
            ("//spiffworkflow:preScript", True, "pre-script"),
            ("//spiffworkflow:postScript", True, "post-script"),
            ("//bpmn:conditionExpression", False, "condition"),
            ("//bpmn:timeDuration|//bpmn:timeDate|//bpmn:timeCycle", False, "timer expression"),
            ("//bpmn:completionCondition", False, "completion condition"),
            ("//bpmn:loopCardinality", False, "loop cardinality"),
            ("//bpmn:loopCondition", False, "loop condition"),
            ("//bpmn:conditionalEventDefinition/bpmn:condition", False, "condition"),
            ("//bpmn:activationCondition", False, "activation condition"),
            # Any other element typed as a formal expression, wherever it sits.
            (f"//*[contains(@xsi:type, 'FormalExpression') and not({_CHECKED_ABOVE})]", False, "expression"),
        ]
        for xpath, is_script, what in kinds:
            for node in root.xpath(xpath, namespaces=_NS_XSI):
                source = (node.text or "").strip()
                if what == "timer expression":
                    source = normalise_timer_expression(source)
                if source:
                    with self.each():
                        self.check_code(source, _owner_id(node), script=is_script, what=what, line=node.sourceline)
        for node in root.xpath("//spiffworkflow:parameter", namespaces=NS):
            with self.each():
                self.check_code(
                    node.get("value", "") or "None",
                    _owner_id(node),
                    script=False,
                    what=f"parameter '{node.get('id')}'",
                    line=node.sourceline,
                )

    def check_code(
        self, source: str, element_id: str | None, *, script: bool, what: str, line: int | None = None
    ) -> None:
        from .sandbox import check_expression, check_script

        try:
            (check_script if script else check_expression)(source)
        except UnsafeCode as exc:
            raise UnsafeCode(
                f"The {what} of {element_id} is refused: {exc.message}",
                element_id=element_id,
                line=line or self._line(element_id),
            ) from None
        except EngineError as exc:
            raise DefinitionInvalid(
                f"The {what} of {element_id} is invalid: {exc.message}",
                element_id=element_id,
                line=line or self._line(element_id),
            ) from None

    def _line(self, element_id: str | None) -> int | None:
        return self.index[element_id].line if element_id in self.index else line_of(self.tree, element_id)

    def check_event_gateway(self, task_spec, bpmn_id: str, definition) -> None:
        """An event-based gateway waits for the events after it (SpiffWorkflow moves their definitions onto the
        gateway): each is checked as the event's own would be; at most one of them may be a timer."""
        from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
        from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

        timers = [d for d in definition.event_definitions if isinstance(d, TimerEventDefinition)]
        if len(timers) > 1:
            self.fail(
                f"The event-based gateway {bpmn_id} races {len(timers)} timers; Tether waits for at most one timer "
                "after an event-based gateway. Change it: keep the earliest timer, or put the others on a later step.",
                bpmn_id,
            )
        for inner in definition.event_definitions:
            if not isinstance(inner, TimerEventDefinition | MessageEventDefinition):
                self.fail(
                    f"The event-based gateway {bpmn_id} waits for a {type(inner).__name__}; Tether waits there only "
                    "for messages and one timer. Change it: catch a message posted through POST /api/v1/messages.",
                    bpmn_id,
                )
            self.check_event_definition(_Carrier(inner), bpmn_id)

    def check_event_definition(self, task_spec, bpmn_id: str) -> None:
        from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
        from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
        from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

        definition = getattr(task_spec, "event_definition", None)
        if definition is None:
            return
        if isinstance(definition, MultipleEventDefinition):
            self.check_event_gateway(task_spec, bpmn_id, definition)
            return
        if isinstance(definition, TimerEventDefinition):
            definition.expression = normalise_timer_expression(definition.expression)
        elif isinstance(definition, MessageEventDefinition):
            self.info.messages.append(definition.name)
            if getattr(definition, "expression", None):
                self.check_code(definition.expression, bpmn_id, script=False, what="message payload")
            if hasattr(definition, "message_var") and not definition.message_var:
                definition.message_var = definition.name
            for prop in getattr(definition, "correlation_properties", []):
                self.check_code(prop.retrieval_expression, bpmn_id, script=False, what="correlation")

    def check_user_task(self, task_spec, bpmn_id: str, element: ElementInfo | None, props: dict) -> None:
        lane = element.lane if element else None
        if lane is None:
            raise DefinitionInvalid(
                f"User task {bpmn_id} is not in a lane; put it in a lane named after the role that "
                f"completes it ({', '.join(TASK_ROLES)}).",
                element_id=bpmn_id,
                line=self._line(bpmn_id),
            )
        role = lane.strip().lower().replace(" ", "_")
        if role not in TASK_ROLES:
            self.fail(
                f"User task {bpmn_id} is in lane '{lane}', which names no role that can complete "
                f"tasks ({', '.join(TASK_ROLES)}).",
                bpmn_id,
            )
        extensions = getattr(task_spec, "extensions", {}) or {}
        ext_props = extensions.get("properties", {}) or props
        form = ext_props.get("formJsonSchemaFilename") or None
        ui_form = ext_props.get("formUiSchemaFilename") or None
        for name in (form, ui_form):
            if name and name not in self.forms:
                self.fail(
                    f"User task {bpmn_id} references form {name}, which was neither uploaded with "
                    "the diagram nor shipped in forms/.",
                    bpmn_id,
                )
            if name:
                self.info.forms.append(name)
        signature, signature_field, signature_meanings = self.signature(bpmn_id, ext_props.get("signature"), form)
        evidence = tuple(e.strip() for e in (ext_props.get("evidence") or "").split(",") if e.strip())
        if evidence:
            self.evidence[bpmn_id] = evidence
        party = ext_props.get("party") or (element.lane_properties.get("party") if element else None)
        party = (party or DEFAULT_PARTY).strip().lower()
        if party not in PARTIES:
            self.fail(
                f"User task {bpmn_id} belongs to the party '{party}'; a task's or its lane's 'party' property "
                f"names one of {', '.join(PARTIES)}.",
                bpmn_id,
            )
        self.info.user_tasks[bpmn_id] = UserTaskInfo(
            activity_id=bpmn_id,
            name=task_spec.bpmn_name or bpmn_id,
            role=role,
            form=form,
            ui_form=ui_form,
            instructions=extensions.get("instructionsForEndUser"),
            signature=signature,
            party=party,
            signature_field=signature_field,
            signature_meanings=signature_meanings,
            evidence=evidence,
        )

    def signature(self, bpmn_id: str, text: str | None, form: str | None) -> tuple[str | None, str | None, dict]:
        """A user task's ``signature`` property: one meaning (``approval``), or a meaning per value of a field of
        its form (``release_decision: released=approval, rejected=rejection``). Returns the first (or only)
        meaning, the field and the meaning of each value."""
        text = (text or "").strip()
        if not text:
            return None, None, {}
        by_decision = _SIGNATURE_BY_DECISION.match(text)
        if by_decision is None:
            self.check_meaning(bpmn_id, text)
            return text, None, {}
        field_name, rest = by_decision.group(1), by_decision.group(2)
        meanings: dict[str, str] = {}
        for pair in rest.split(","):
            value, equals, meaning = (part.strip() for part in pair.partition("="))
            if not equals or not value or not meaning:
                self.fail(
                    f"User task {bpmn_id}'s signature '{text}' is not 'field: value=meaning, value=meaning' "
                    f"('{pair.strip()}' is no value=meaning pair).",
                    bpmn_id,
                )
            if value in meanings:
                self.fail(f"User task {bpmn_id}'s signature names the value '{value}' twice.", bpmn_id)
            self.check_meaning(bpmn_id, meaning)
            meanings[value] = meaning
        schema = self.forms.get(form) if form else None
        prop = ((schema or {}).get("properties") or {}).get(field_name)
        if not isinstance(prop, dict):
            where = f"its form {form}" if form else "its form (it has none)"
            self.fail(
                f"User task {bpmn_id}'s signature follows the field '{field_name}', which is not a field of {where}.",
                bpmn_id,
            )
        choices = [choice_text(c) for c in _field_choices(prop or {})]
        if choices:
            unknown = [v for v in meanings if v not in choices]
            missing = [c for c in choices if c not in meanings]
            if unknown or missing:
                problem = (
                    f"names {', '.join(repr(v) for v in unknown)}, not a value of the field"
                    if unknown
                    else f"gives no meaning for {', '.join(repr(c) for c in missing)}"
                )
                self.fail(
                    f"User task {bpmn_id}'s signature {problem} '{field_name}' (its values: {', '.join(choices)}).",
                    bpmn_id,
                )
        return next(iter(meanings.values())), field_name, meanings

    def check_meaning(self, bpmn_id: str, meaning: str) -> None:
        if meaning not in SIGNATURE_MEANINGS:
            self.fail(
                f"User task {bpmn_id} asks for a signature meaning '{meaning}'; use one of "
                f"{', '.join(SIGNATURE_MEANINGS)}.",
                bpmn_id,
            )

    def check_evidence(self) -> None:
        """Each task's ``evidence`` names records or messages the diagram waits for (checked once every message
        is known)."""
        names = set(self.info.messages)
        prefixes = {name.split(".", 1)[0] for name in names}
        for bpmn_id, items in self.evidence.items():
            for item in items:
                if item not in EVIDENCE_RECORDS and item not in names and item not in prefixes:
                    with self.each():
                        self.fail(
                            f"User task {bpmn_id}'s evidence names '{item}', which is neither a record "
                            f"({', '.join(EVIDENCE_RECORDS)}) nor a message the diagram waits for (by its name, or the "
                            f"part before its first dot: {', '.join(sorted(prefixes)) or 'none'}).",
                            bpmn_id,
                        )

    def phase(self, element: ElementInfo | None, bpmn_id: str) -> str | None:
        """The activity's phase: its own ``phase`` property, else its lane's; None when neither declares one."""
        if element is None:
            return None
        own = element.properties.get("phase")
        text = own if own is not None else element.lane_properties.get("phase")
        if text is None:
            return None
        phase = text.strip().lower()
        if not phase:
            return None
        if len(phase) > PHASE_MAX_LENGTH or not _PHASE.match(phase):
            where = "Its" if own is not None else "Its lane's"
            self.fail(
                f"{where} 'phase' property of {bpmn_id} is '{text}'; a phase is a lowercase word or words joined "
                f"by hyphens (at most {PHASE_MAX_LENGTH} characters), such as {', '.join(PHASES)}.",
                bpmn_id,
            )
        return phase

    def check_service_task(self, task_spec, bpmn_id: str) -> None:
        operator = task_spec.operation_name
        if operator not in self.operators:
            known = ", ".join(sorted(self.operators)) or "none"
            self.fail(f"Service task {bpmn_id} uses the unknown operator '{operator}' (known: {known}).", bpmn_id)
        self.info.operators.append(operator)
        signature = self.operators.get(operator)
        if signature is None:
            return
        given = set(task_spec.operation_params or {})
        missing, unknown = sorted(signature.requires - given), sorted(given - signature.takes)
        if missing or unknown:
            takes = ", ".join(sorted(signature.takes)) or "no parameters"
            said = []
            if missing:
                said.append(f"needs the parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            if unknown:
                said.append(f"has {', '.join(repr(u) for u in unknown)}, which '{operator}' does not take")
            self.fail(f"Service task {bpmn_id} {' and '.join(said)} ('{operator}' takes: {takes}).", bpmn_id)
