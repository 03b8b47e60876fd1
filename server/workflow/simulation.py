"""Trying a draft (or a deployed version) on a simulated clock, without touching real therapies.

The diagram is checked and parsed exactly as a deployment would (``definitions.check``: the same parser, forms,
decisions and called processes), then run by ``engine.simulation`` in memory with the configured limits of the
sandbox and of one engine command. Nothing is written: no therapy, no task rows, no audit entries, no outbox
events, webhooks or alerts.

Service tasks: an operator runs in a simulation only when it is pure, reading nothing but its parameters and
the simulated therapy and writing nothing (``SIMULATED_OPERATORS``: ``coi.assign``, which returns the simulated
therapy's COI). Every other operator reaches outside or writes (``http`` calls out, ``notify`` and ``publish``
send, ``slot.book`` books capacity): it is skipped, said so in the events, and its result variable is set to an
empty object.

Vein-to-vein follows the therapy record's rule (``compliance.record.collection_and_infusion``): from the last
collection (its form's ``collection_completed_at``, else the collection task's completion) to the infusion (the
``infusion_started_at`` a form recorded). A form's top-level ``date-time`` fields are set to the simulated moment
the task is completed, so these read the simulated clock; none when the run never reached an infusion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from flask import current_app
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from engine.bpmn_xml import NS, parse_bpmn
from engine.coi import issue_coi
from engine.definition import Definition
from engine.errors import EngineError
from engine.simulation import MAX_RUNS, START_AT, CompletedTask, Limits, Plan, Simulation
from engine.values import DEFAULT_LIMITS
from server.compliance.record import collection_and_infusion
from server.errors import ApiError, Invalid
from server.store.models import ProcessDefinition, ProcessDraft
from server.workflow import definitions, drafts
from server.workflow.operators import OperatorContext, coi_assign
from server.workflow.therapies import PROTECTED_KEYS

SIMULATED_OPERATORS = ("coi.assign",)
# The made-up therapy every run is: its COI (ISBT 128, facility W0000 "simulation"), patient and site.
SIMULATED_COI = issue_coi("W0000", 2026, 1)
SIMULATED_START = {"coi": SIMULATED_COI.value, "patient_reference": "SIMULATED-1", "site": "SIMULATED"}
MAX_HOURS = 24 * 365  # the longest duration a step may be given
BATCH_WALL_SECONDS = 60.0
FIRST_YEAR, LAST_YEAR = 1970, 2500  # when a simulated clock may start


@dataclass(frozen=True)
class Options:
    """What the designer asks of a simulation (already read from the request)."""

    durations: Mapping[str, list[float]] = field(default_factory=dict)
    gateways: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    start_data: Mapping[str, Any] = field(default_factory=dict)
    start_at: datetime | None = None
    default_hours: list[float] | None = None
    runs: int | None = None
    seed: int = 0
    bpmn: str | None = None  # a draft's diagram as drawn (not saved), tried instead of the saved one


HOURS = fields.Float(validate=validate.Range(0, MAX_HOURS), allow_nan=False)
ELEMENT_ID = fields.String(validate=validate.Length(min=1, max=200))


def _hour_range() -> fields.List:
    """``[least, most]`` hours; a duration always the same is ``[h, h]``."""
    return fields.List(HOURS, validate=validate.Length(equal=2))


class OptionsSchema(Schema):
    """The body of a simulation request (the API's and the studio page's): every field optional."""

    class Meta:
        unknown = RAISE

    bpmn = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=1024 * 1024))
    durations = fields.Dict(
        keys=ELEMENT_ID, values=_hour_range(), load_default=dict, validate=validate.Length(max=1000)
    )
    default_hours = fields.List(HOURS, load_default=None, allow_none=True, validate=validate.Length(equal=2))
    gateways = fields.Dict(
        keys=ELEMENT_ID, values=fields.String(validate=validate.Length(min=1, max=200)), load_default=dict
    )
    data = fields.Dict(keys=ELEMENT_ID, values=fields.Dict(keys=fields.String()), load_default=dict)
    start_data = fields.Dict(keys=fields.String(), load_default=dict)
    start_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=UTC)
    runs = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(1, MAX_RUNS))
    seed = fields.Integer(load_default=0, strict=True, validate=validate.Range(0, 2**31 - 1))

    @validates("start_at")
    def _plausible(self, moment, **kwargs):
        if moment is not None and not FIRST_YEAR <= moment.astimezone(UTC).year <= LAST_YEAR:
            raise ValidationError(f"Must lie between the years {FIRST_YEAR} and {LAST_YEAR}.")

    @validates_schema
    def _ranges(self, body, **kwargs):
        for activity_id, (low, high) in (body.get("durations") or {}).items():
            if low > high:
                raise ValidationError({activity_id: ["The least hours are more than the most."]}, "durations")
        hours = body.get("default_hours")
        if hours and hours[0] > hours[1]:
            raise ValidationError(["The least hours are more than the most."], "default_hours")


def read_options(body: Any) -> Options:
    """The options of a request body the page sent; 422 naming the field (the API reads them with ``load_json``)."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.", code="invalid_request")
    try:
        return Options(**OptionsSchema().load(body))
    except ValidationError as exc:
        raise Invalid(
            "The request is not valid; see the fields.", code="invalid_request", details={"fields": exc.messages}
        ) from None


def _vein_to_vein(tasks: list[CompletedTask]):
    collected, _source, infused = collection_and_infusion(tasks)  # type: ignore[arg-type]
    return collected, infused


def _service_caller(operator: str, params: dict, data: dict) -> Any:
    """Only the pure operators reach here (``SIMULATED_OPERATORS``), on the simulated therapy."""
    context = OperatorContext(therapy=SimpleNamespace(coi=SIMULATED_COI.value), actor="simulation")
    if operator == "coi.assign":
        return coi_assign.run(context, params)
    raise RuntimeError(f"{operator} is not run in a simulation")


def _draft_definition(draft: ProcessDraft, bpmn: str | None) -> tuple[Definition, dict, str]:
    """The draft (or ``bpmn``, its diagram as drawn) checked as a deployment would check it, with the forms it may
    use; 422 with every problem."""
    text = draft.bpmn_xml if bpmn is None else bpmn
    try:
        definition, forms, _decisions, _bound = definitions.check(
            text.encode("utf-8"),
            {name: json.dumps(schema).encode() for name, schema in (draft.forms or {}).items()},
            {name: xml.encode() for name, xml in (draft.decisions or {}).items()},
        )
    except (EngineError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status != 422:
            raise
        found = drafts.problem(exc)
        where = f" (element {found['element_id']})" if found["element_id"] else ""
        raise Invalid(
            f"The draft cannot be tried: {found['message']}{where}",
            code="draft_invalid",
            details={"draft_id": draft.id, "problems": [found]},
        ) from None
    return definition, forms, text


def simulate_draft(draft: ProcessDraft, options: Options) -> dict[str, Any]:
    """One simulated run of the draft, or a batch of ``options.runs``."""
    definition, forms, xml = _draft_definition(draft, options.bpmn)
    return _simulate(definition, forms, xml, options)


def simulate_version(row: ProcessDefinition, options: Options) -> dict[str, Any]:
    """One simulated run of a deployed version, or a batch."""
    definition = definitions.engine_definition(row)
    return _simulate(definition, dict(row.forms or {}), row.bpmn_xml, options)


def _simulate(definition: Definition, forms: Mapping[str, Any], xml: str, options: Options) -> dict[str, Any]:
    plan = plan_for(definition, xml, options)
    config = current_app.config
    simulation = Simulation(
        definition,
        forms,
        simulated_operators=SIMULATED_OPERATORS,
        service_caller=_service_caller,
        vein_to_vein=_vein_to_vein,
        limits=Limits(max_steps=5 * int(config["ENGINE_MAX_STEPS"])),
        runtime_options={
            "time_limit": config["SCRIPT_TIME_LIMIT"],
            "memory_limit_mb": int(config["SCRIPT_MEMORY_MB"]),
            "max_steps": int(config["ENGINE_MAX_STEPS"]),
            "time_budget": float(config["ENGINE_TIME_BUDGET"]),
            "data_limits": DEFAULT_LIMITS.with_chars(int(config["MAX_PROCESS_DATA_CHARS"])),
            "protected_keys": PROTECTED_KEYS,
        },
    )
    if options.runs is None:
        return {"key": definition.info.key, **simulation.run(plan)}
    return {"key": definition.info.key, **simulation.batch(plan, options.runs, options.seed, BATCH_WALL_SECONDS)}


def plan_for(definition: Definition, xml: str, options: Options) -> Plan:
    """The engine's plan from the designer's options; 422 naming the field for an element the diagram does not
    have, a flow that does not leave its gateway, or a range whose least is more than its most."""
    activities = definition.info.activities
    errors: dict[str, str] = {}
    durations: dict[str, tuple[float, float]] = {}
    for activity_id, (low, high) in options.durations.items():
        if activity_id not in activities:
            errors[f"durations.{activity_id}"] = "The diagram has no element with this id."
        elif low > high:
            errors[f"durations.{activity_id}"] = "The least hours are more than the most."
        else:
            durations[activity_id] = (float(low), float(high))
    for activity_id in options.data:
        if activity_id not in activities:
            errors[f"data.{activity_id}"] = "The diagram has no element with this id."
    if options.default_hours and options.default_hours[0] > options.default_hours[1]:
        errors["default_hours"] = "The least hours are more than the most."
    flows = _gateway_flows(xml)
    choices: dict[str, str] = {}
    for gateway_id, flow_id in options.gateways.items():
        leaving = flows.get(gateway_id)
        if leaving is None:
            errors[f"gateways.{gateway_id}"] = "The diagram has no exclusive gateway with this id."
        elif flow_id not in leaving:
            errors[f"gateways.{gateway_id}"] = f"No sequence flow '{flow_id}' leaves this gateway."
        else:
            choices[gateway_id] = leaving[flow_id]
    if errors:
        raise Invalid("The simulation's options are not valid; see the fields.", details={"fields": errors})
    return Plan(
        durations=durations,
        choices=choices,
        data={k: dict(v) for k, v in options.data.items()},
        start={**dict(options.start_data), **SIMULATED_START},
        start_at=options.start_at or START_AT,
        default_hours=tuple(options.default_hours) if options.default_hours else (1.0, 1.0),  # type: ignore[arg-type]
    )


def _gateway_flows(xml: str) -> dict[str, dict[str, str]]:
    """Exclusive gateway id -> {id of each sequence flow leaving it: the id of the element it leads to}."""
    root = parse_bpmn(xml.encode("utf-8")).getroot()
    gateways: dict[str, dict[str, str]] = {g.get("id"): {} for g in root.iter(f"{{{NS['bpmn']}}}exclusiveGateway")}
    for flow in root.iter(f"{{{NS['bpmn']}}}sequenceFlow"):
        source = flow.get("sourceRef")
        if source in gateways:
            gateways[source][flow.get("id")] = flow.get("targetRef")
    return gateways


__all__ = ["MAX_HOURS", "MAX_RUNS", "Options", "OptionsSchema", "read_options", "simulate_draft", "simulate_version"]
