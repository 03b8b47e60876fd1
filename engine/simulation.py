"""Trying a diagram on a simulated clock: one made-up therapy run from its start to an end, in memory only.

The simulation drives the same ``Runtime`` that real therapies use (the same parser, sandbox, step and time
budget per command), on a clock that only moves when the simulation moves it:

- each ready user task takes a duration (hours drawn uniformly from the range given for its element id, else
  ``DEFAULT_HOURS``) and is then completed with its form's first ``examples`` entry, every top-level
  ``date-time`` field set to the simulated moment of completion, merged with the designer's data for it;
- each message the diagram waits for (a receive task, an intermediate catch event, an event after an
  event-based gateway) is delivered after its duration with the payload of its schema's first example (dates
  again the simulated moment); a message caught by a boundary event is a deviation and is delivered only
  when the designer gives that event a duration;
- timers fire when the clock reaches them: a task or message that takes longer than a boundary timer's
  duration lets that timer fire first (a completion due at the very moment a timer is due comes first);
- at an exclusive gateway the designer may pick the element the branch leads to; otherwise the conditions
  decide on the data;
- service tasks run their operator only when it is in ``simulated_operators`` (the caller decides which are
  pure); any other is recorded as skipped and its result variable set to an empty object.

Bounded: at most ``Limits.max_steps`` elements completed in all, ``Limits.max_events`` simulated events (task
completions, deliveries, timer firings), ``Limits.max_days`` of simulated time and ``Limits.wall_seconds`` of
real time; past any of them the run stops, reported as ``did_not_finish``. Nothing is stored anywhere.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from SpiffWorkflow.bpmn.specs.mixins.exclusive_gateway import ExclusiveGateway

from . import events as ev
from .clock import FakeClock
from .definition import Definition
from .errors import EngineError
from .outcome import IncidentOpened, Outcome
from .runtime import Runtime
from .sandbox import SandboxScriptEngine
from .serialization import state_from_dict, state_to_dict

DEFAULT_HOURS = (1.0, 1.0)
START_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MAX_RUNS = 500
HISTOGRAM_BINS = 10
TIMER_STEP = timedelta(seconds=1)


@dataclass(frozen=True)
class Limits:
    """How far one simulated run may go."""

    max_steps: int = 5_000
    max_events: int = 1_000
    max_days: float = 3 * 365
    wall_seconds: float = 20.0


@dataclass(frozen=True)
class Plan:
    """What the designer chose for a run.

    ``durations``: element id -> (least, most) hours a user task, a message or a boundary message takes;
    ``choices``: exclusive gateway id -> id of the element its chosen outgoing flow leads to; ``data``: element
    id -> values merged over the example data of a user task's completion or a message's payload; ``start``:
    the process data a run starts with.
    """

    durations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    choices: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    start: Mapping[str, Any] = field(default_factory=dict)
    start_at: datetime = START_AT
    default_hours: tuple[float, float] = DEFAULT_HOURS


@dataclass(frozen=True)
class CompletedTask:
    """A user task the run completed: what a task row of a real therapy would hold."""

    activity_id: str
    form: str | None
    data: dict
    completed_at: datetime


# From the completed tasks (in completion order): when the cells were collected and when the product was infused.
VeinToVein = Callable[[list[CompletedTask]], tuple[datetime | None, datetime | None]]


class _Choosing(SandboxScriptEngine):
    """The sandbox, with the designer's gateway choices forced and unsafe operators skipped."""

    def __init__(self, *, choices: Mapping[str, str], simulated: Iterable[str], skipped: list, **kwargs: Any):
        super().__init__(**kwargs)
        self.choices, self.simulated, self.skipped = dict(choices), set(simulated), skipped

    def evaluate(self, task: Any, expression: str, external_context: dict | None = None) -> Any:
        spec = task.task_spec
        chosen = self.choices.get(getattr(spec, "bpmn_id", None) or "")
        if chosen is not None and isinstance(spec, ExclusiveGateway):
            specs = task.workflow.spec.task_specs
            for condition, name in spec.cond_task_specs:
                if condition is not None and condition.args[0] == expression:
                    if getattr(specs.get(name), "bpmn_id", None) == chosen:
                        return True
            return False
        return super().evaluate(task, expression, external_context)

    def call_service(self, task: Any, operation_name: str, operation_params: dict, **kwargs: Any) -> str:
        if operation_name in self.simulated:
            return super().call_service(task, operation_name, operation_params, **kwargs)
        self.skipped.append((task.task_spec.bpmn_id, operation_name))
        return "{}"


class _SimulatedRuntime(Runtime):
    """A runtime whose instance stays in memory between commands (``round_trip`` saves and restores it through
    JSON after every command, as a stored therapy is)."""

    def __init__(self, definition: Definition, *, engine_options: dict, round_trip: bool, **kwargs: Any):
        super().__init__(definition, **kwargs)
        self.engine_options, self.round_trip = engine_options, round_trip

    def _script_engine(self):
        return _Choosing(
            service_caller=self.service_caller,
            time_limit=self.time_limit,
            memory_limit_mb=self.memory_limit_mb,
            data_limits=self.data_limits,
            protected_keys=self.protected_keys,
            **self.engine_options,
        )

    def _save(self, workflow):
        if self.round_trip:
            return json.loads(json.dumps(state_to_dict(workflow)))
        return {"live": workflow}

    def _restore(self, state):
        if "live" in state:
            return state["live"]
        return state_from_dict(state, self.definition.spec, self.definition.subprocess_specs, self._script_engine())


def example_of(schema: Mapping[str, Any] | None) -> dict:
    """A form's (or message schema's) first ``examples`` entry, or an empty object."""
    examples = (schema or {}).get("examples")
    if isinstance(examples, list) and examples and isinstance(examples[0], dict):
        return copy.deepcopy(examples[0])
    return {}


def _date_time_fields(schema: Mapping[str, Any] | None) -> list[str]:
    properties = (schema or {}).get("properties") or {}
    return [name for name, prop in properties.items() if isinstance(prop, dict) and prop.get("format") == "date-time"]


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _hours(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / 3600, 2)


class Simulation:
    """Runs simulated therapies of one definition."""

    def __init__(
        self,
        definition: Definition,
        forms: Mapping[str, Mapping[str, Any]],
        *,
        simulated_operators: Iterable[str] = (),
        service_caller: Callable[[str, dict, dict], Any] | None = None,
        vein_to_vein: VeinToVein | None = None,
        limits: Limits = Limits(),
        runtime_options: Mapping[str, Any] | None = None,
        round_trip: bool = False,
    ):
        self.definition, self.forms = definition, forms
        self.simulated_operators = tuple(simulated_operators)
        self.service_caller = service_caller
        self.vein_to_vein, self.limits = vein_to_vein, limits
        self.runtime_options = dict(runtime_options or {})
        self.round_trip = round_trip
        self.lanes = self._lanes()

    def _lanes(self) -> dict[str, str]:
        lanes: dict[str, str] = {}
        for spec in (self.definition.spec, *self.definition.subprocess_specs.values()):
            for task_spec in spec.task_specs.values():
                bpmn_id, lane = getattr(task_spec, "bpmn_id", None), getattr(task_spec, "lane", None)
                if bpmn_id and lane:
                    lanes.setdefault(bpmn_id, lane)
        return lanes

    # -- one run --------------------------------------------------------------------------------
    def run(self, plan: Plan, rng: random.Random | None = None, *, detail: bool = True) -> dict[str, Any]:
        """Run one simulated therapy to an end (or a limit) and describe it (``detail``: with its path and events)."""
        return _Run(self, plan, rng or random.Random(0), detail).go()

    # -- a batch ------------------------------------------------------------------------------
    def batch(self, plan: Plan, runs: int, seed: int = 0, wall_seconds: float = 60.0) -> dict[str, Any]:
        """Run ``runs`` simulated therapies (durations drawn from one generator seeded with ``seed``: the same
        seed gives the same report) and report how they went: the spread of vein-to-vein times, which end each
        reached and how often each escalation and timer fired."""
        if not 1 <= runs <= MAX_RUNS:
            raise ValueError(f"runs must be from 1 to {MAX_RUNS}")
        rng = random.Random(seed)
        started = time.monotonic()
        results = []
        for _ in range(runs):
            if time.monotonic() - started > wall_seconds:
                break
            results.append(self.run(plan, rng, detail=False))
        return summarise(results, runs, seed, wall_seconds)


class _Run:
    """The state of one simulated run."""

    def __init__(self, sim: Simulation, plan: Plan, rng: random.Random, detail: bool):
        self.sim, self.plan, self.rng, self.detail = sim, plan, rng, detail
        self.info = sim.definition.info
        self.clock = FakeClock(plan.start_at)
        self.skipped: list[tuple[str, str]] = []
        options = {
            "max_steps": 1_000,
            "time_budget": 5.0,
            **sim.runtime_options,
        }
        self.runtime = _SimulatedRuntime(
            sim.definition,
            clock=self.clock,
            service_caller=sim.service_caller,
            engine_options={"choices": plan.choices, "simulated": sim.simulated_operators, "skipped": self.skipped},
            round_trip=sim.round_trip,
            **options,
        )
        self.path: list[dict] = []
        self.events: list[dict] = []
        self.alerts: list[dict] = []
        self.completed: list[CompletedTask] = []
        self.started_at: dict[str, datetime] = {}
        self.tasks_due: dict[str, tuple[datetime, str]] = {}  # task id -> (when it is done, activity id)
        self.messages_due: dict[str, tuple[datetime, str]] = {}  # catching element id -> (when it comes, name)
        self.steps = 0
        self.end: str | None = None
        self.status = "running"
        self.problem: str | None = None

    def go(self) -> dict[str, Any]:
        limits = self.sim.limits
        wall = time.monotonic()
        outcome = self._command(lambda: self.runtime.start(dict(self.plan.start)))
        taken = 0
        while outcome is not None and self.status == "running":
            if outcome.completed:
                self.status = "completed"
                break
            if self.steps > limits.max_steps or taken >= limits.max_events:
                self._stop(f"did not finish after {self.steps} steps ({taken} simulated events)")
                break
            if time.monotonic() - wall > limits.wall_seconds:
                self._stop(f"did not finish within {limits.wall_seconds:g} seconds of real time ({self.steps} steps)")
                break
            nxt = self._next(outcome)
            if nxt is None:
                self.status = "stuck"
                self.problem = self._stuck_reason(outcome)
                break
            moment, act = nxt
            if moment - self.plan.start_at > timedelta(days=limits.max_days):
                self._stop(f"did not finish within {limits.max_days:g} simulated days ({self.steps} steps)")
                break
            self.clock.now = max(self.clock.now, moment)
            taken += 1
            state = outcome.state
            outcome = self._command(lambda state=state, act=act: act(state))  # type: ignore[misc]
        return self._result()

    def _stop(self, reason: str) -> None:
        self.status, self.problem = "did_not_finish", reason

    # -- what happens next --------------------------------------------------------------------
    def _duration(self, activity_id: str) -> timedelta:
        low, high = self.plan.durations.get(activity_id, self.plan.default_hours)
        hours = low if high <= low else self.rng.uniform(low, high)
        return timedelta(hours=hours)

    def _next(self, outcome: Outcome):
        """The earliest thing to happen: a task done or a message come (first, at the same moment), else a timer."""
        candidates: list[tuple[datetime, int, str, Callable]] = []
        for task_id, (moment, activity_id) in self.tasks_due.items():
            candidates.append((moment, 0, task_id, self._completion(task_id, activity_id)))
        for activity_id, (moment, name) in self.messages_due.items():
            candidates.append((moment, 1, activity_id, self._delivery(activity_id, name)))
        for wait in outcome.waiting_for:
            if wait.type == "timer" and wait.due_at is not None:
                # A timer fires once its due time has passed: the clock moves a second past it.
                candidates.append((wait.due_at + TIMER_STEP, 2, wait.activity_id, self.runtime.fire_timers))
        if not candidates:
            return None
        moment, _order, _key, act = min(candidates, key=lambda c: (c[0], c[1], c[2]))
        return moment, act

    def _completion(self, task_id: str, activity_id: str) -> Callable:
        def act(state):
            data = self._task_data(activity_id)
            self.tasks_due.pop(task_id, None)
            return self.runtime.complete_task(state, task_id, data)

        return act

    def _delivery(self, activity_id: str, name: str) -> Callable:
        def act(state):
            self.messages_due.pop(activity_id, None)
            schema_file = self.info.message_schemas.get(name)
            payload = self._filled(self.sim.forms.get(schema_file) if schema_file else None, activity_id)
            self._event("message.delivered", activity_id, name=name)
            return self.runtime.deliver_message(state, name, payload)

        return act

    def _filled(self, schema: Mapping[str, Any] | None, activity_id: str) -> dict:
        data = example_of(schema)
        now = _iso(self.clock.now)
        for name in _date_time_fields(schema):
            if name in data or name in ((schema or {}).get("required") or []):
                data[name] = now
        data.update(copy.deepcopy(dict(self.plan.data.get(activity_id) or {})))
        return data

    def _task_data(self, activity_id: str) -> dict:
        user_task = self.info.user_tasks.get(activity_id)
        schema = self.sim.forms.get(user_task.form) if user_task and user_task.form else None
        data = self._filled(schema, activity_id)
        if schema:
            from jsonschema import Draft202012Validator

            errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
            if errors:
                where = ".".join(str(p) for p in errors[0].path) or "(the form)"
                self._event(
                    "form.invalid",
                    activity_id,
                    message=f"The data for '{user_task.name if user_task else activity_id}' fails its form at "
                    f"{where}: {errors[0].message}; a real completion would be refused.",
                )
        return data

    def _command(self, command: Callable[[], Outcome]) -> Outcome | None:
        try:
            outcome = command()
        except EngineError as exc:
            self.status = "failed"
            self.problem = exc.message
            self._event("error", exc.element_id, code=exc.code, message=exc.message)
            return None
        self._take(outcome)
        return outcome

    # -- what a command did ----------------------------------------------------------------------
    def _event(self, kind: str, activity_id: str | None, **extra: Any) -> None:
        name = self._name(activity_id) if activity_id else None
        self.events.append(
            {"type": kind, "at": _iso(self.clock.now), "activity_id": activity_id, "name": name, **extra}
        )

    def _name(self, activity_id: str) -> str:
        info = self.info.activities.get(activity_id)
        return (info.name if info else None) or activity_id

    def _take(self, outcome: Outcome) -> None:
        now = self.clock.now
        skipped = list(self.skipped)
        self.skipped.clear()
        for event in outcome.events:
            if isinstance(event, ev.ActivityCompleted):
                self._passed(event.activity_id, event.name, event.kind, now)
            elif isinstance(event, ev.TaskCompleted):
                user_task = self.info.user_tasks.get(event.activity_id)
                self.completed.append(
                    CompletedTask(event.activity_id, user_task.form if user_task else None, dict(event.data), now)
                )
                self._passed(event.activity_id, event.name, "UserTask", now)
            elif isinstance(event, ev.ServiceCalled):
                if (event.activity_id, event.operator) in skipped:
                    skipped.remove((event.activity_id, event.operator))
                    self._event(
                        "service.skipped",
                        event.activity_id,
                        operator=event.operator,
                        message=f"{event.operator} is not run in a simulation; its result is an empty object.",
                    )
            elif isinstance(event, ev.TimerFired):
                self._event("timer.fired", event.activity_id, attached_to=event.attached_to)
            elif isinstance(event, ev.TaskEscalated):
                role = event.role or "coordinator"
                message = f"'{event.late_activity_name}' is late ({event.name}); the {role} role is asked to act."
                self._event(
                    "task.escalated",
                    event.activity_id,
                    late_activity_id=event.late_activity_id,
                    role=role,
                    message=message,
                )
                self.alerts.append(
                    {
                        "kind": "escalation",
                        "severity": "high",
                        "role": role,
                        "activity_id": event.late_activity_id,
                        "timer_activity_id": event.activity_id,
                        "message": message,
                        "raised_at": _iso(now),
                    }
                )
            elif isinstance(event, ev.TaskCancelled):
                self.tasks_due.pop(event.task_id, None)
                self.started_at.pop(event.activity_id, None)
                self._event("task.cancelled", event.activity_id)
            elif isinstance(event, IncidentOpened):
                self._event("incident.opened", event.activity_id, operator=event.operator, message=event.message)
                self.alerts.append(
                    {
                        "kind": "incident",
                        "severity": "high",
                        "role": "admin",
                        "activity_id": event.activity_id,
                        "message": f"'{event.name}' failed: {event.message}",
                        "raised_at": _iso(now),
                    }
                )
            elif isinstance(event, ev.ProcessCompleted):
                self.end = event.end_activity_id
        for task in outcome.ready_tasks:
            if task.task_id not in self.tasks_due:
                self.tasks_due[task.task_id] = (now + self._duration(task.activity_id), task.activity_id)
                self.started_at.setdefault(task.activity_id, now)
        ready = {t.task_id for t in outcome.ready_tasks}
        for task_id in [t for t in self.tasks_due if t not in ready]:
            del self.tasks_due[task_id]
        waiting = set()
        for wait in outcome.waiting_for:
            self.started_at.setdefault(wait.attached_to or wait.activity_id, now)
            if wait.type != "message" or wait.name is None:
                continue
            if wait.attached_to and wait.activity_id not in self.plan.durations:
                continue  # a deviation: delivered only when the designer says when
            waiting.add(wait.activity_id)
            if wait.activity_id not in self.messages_due:
                self.messages_due[wait.activity_id] = (now + self._duration(wait.activity_id), wait.name)
        for activity_id in [a for a in self.messages_due if a not in waiting]:
            del self.messages_due[activity_id]

    def _passed(self, activity_id: str, name: str, kind: str, now: datetime) -> None:
        """One element completed: a step of the path, from when it became current to now."""
        self.steps += 1
        started = self.started_at.pop(activity_id, now)
        if self.detail:
            user_task = self.info.user_tasks.get(activity_id)
            self.path.append(
                {
                    "activity_id": activity_id,
                    "name": name,
                    "kind": kind,
                    "started_at": _iso(started),
                    "ended_at": _iso(now),
                    "hours": _hours(started, now),
                    "lane": self.sim.lanes.get(activity_id),
                    "party": user_task.party if user_task else None,
                }
            )

    def _stuck_reason(self, outcome: Outcome) -> str:
        if outcome.failed_tasks:
            failed = outcome.failed_tasks[0]
            return f"stopped at the failed service task '{failed.name}' ({failed.activity_id})"
        messages = [w for w in outcome.waiting_for if w.type == "message"]
        if messages:
            names = ", ".join(sorted({f"'{w.name}' at {w.attached_to or w.activity_id}" for w in messages}))
            return f"waits only for messages the simulation does not send: {names} (give a boundary event a duration)"
        return "waits for nothing the simulation can give"

    def _result(self) -> dict[str, Any]:
        collection_at = infusion_at = None
        if self.sim.vein_to_vein is not None:
            collection_at, infusion_at = self.sim.vein_to_vein(self.completed)
        v2v = None
        if collection_at is not None and infusion_at is not None:
            v2v = _hours(collection_at, infusion_at)
        result: dict[str, Any] = {
            "status": self.status,
            "problem": self.problem,
            "end": {"activity_id": self.end, "name": self._name(self.end)} if self.end else None,
            "started_at": _iso(self.plan.start_at),
            "ended_at": _iso(self.clock.now),
            "elapsed_hours": _hours(self.plan.start_at, self.clock.now),
            "steps": self.steps,
            "vein_to_vein": {
                "collection_at": _iso(collection_at),
                "infusion_at": _iso(infusion_at),
                "hours": v2v,
                "days": round(v2v / 24, 2) if v2v is not None else None,
            },
            "alerts": self.alerts,
            "escalations": [e for e in self.events if e["type"] == "task.escalated"],
            "timers": [e for e in self.events if e["type"] == "timer.fired"],
        }
        if self.detail:
            result["path"] = self.path
            result["events"] = self.events
        return result


def _rank(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * share) - 1))], 2)


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
    """Equal-width bins from the least to the most value: ``{"from_hours", "to_hours", "count"}``."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [{"from_hours": round(low, 2), "to_hours": round(high, 2), "count": len(values)}]
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    return [
        {"from_hours": round(low + i * width, 2), "to_hours": round(low + (i + 1) * width, 2), "count": counts[i]}
        for i in range(bins)
    ]


def summarise(results: list[dict[str, Any]], runs: int, seed: int, wall_seconds: float) -> dict[str, Any]:
    """A batch's report from its runs' results."""
    hours = sorted(r["vein_to_vein"]["hours"] for r in results if r["vein_to_vein"]["hours"] is not None)
    statuses: dict[str, int] = {}
    ends: dict[str, dict[str, Any]] = {}
    escalations: dict[str, dict[str, Any]] = {}
    timers: dict[str, dict[str, Any]] = {}
    problems: dict[str, int] = {}
    for result in results:
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        if result["problem"]:
            problems[result["problem"]] = problems.get(result["problem"], 0) + 1
        if result["end"]:
            entry = ends.setdefault(result["end"]["activity_id"], {**result["end"], "count": 0})
            entry["count"] += 1
        for table, items in ((escalations, result["escalations"]), (timers, result["timers"])):
            for activity_id in {e["activity_id"] for e in items}:
                first = next(e for e in items if e["activity_id"] == activity_id)
                entry = table.setdefault(
                    activity_id,
                    {
                        "activity_id": activity_id,
                        "name": first["name"],
                        "late_activity_id": first.get("late_activity_id") or first.get("attached_to"),
                        "runs": 0,
                        "times": 0,
                    },
                )
                entry["runs"] += 1
                entry["times"] += sum(1 for e in items if e["activity_id"] == activity_id)
    done = len(results)

    def shares(table: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
        rows = sorted(table.values(), key=lambda row: (-row[key], row["activity_id"]))
        return [{**row, "share": round(row[key] / done, 3) if done else None} for row in rows]

    return {
        "runs": runs,
        "completed_runs": done,
        "seed": seed,
        "stopped": None
        if done == runs
        else f"stopped after {done} of {runs} runs: the batch may take {wall_seconds:g} seconds of real time",
        "statuses": statuses,
        "problems": [{"problem": p, "count": c} for p, c in sorted(problems.items(), key=lambda i: -i[1])],
        "ends": shares(ends, "count"),
        "escalations": shares(escalations, "runs"),
        "timers": shares(timers, "runs"),
        "vein_to_vein": {
            "count": len(hours),
            "min_hours": round(hours[0], 2) if hours else None,
            "p10_hours": _rank(hours, 0.1),
            "p50_hours": _rank(hours, 0.5),
            "p90_hours": _rank(hours, 0.9),
            "max_hours": round(hours[-1], 2) if hours else None,
            "histogram": histogram(hours),
        },
    }
