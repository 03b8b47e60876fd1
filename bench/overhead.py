"""Engine overhead: what Tether adds to SpiffWorkflow for one therapy journey, step by step.

    python -m bench.overhead [--journeys 20] [--tasks 10] [--warmup 2] [--only sqlite|postgresql] [--profile]

One journey is: start, ``--tasks`` user tasks one after the other (each completed with form data), two
messages (``courier.picked_up``, ``shipment.delivered``), completion. A step is one of those commands
(``--tasks`` + 3 per journey); its cost is the time from the command to the next wait state. The same
diagram (generated here, one lane ``Coordinator``, one JSON Schema form for every task) runs four ways:

  (a) raw SpiffWorkflow in memory: ``SpiffBpmnParser`` once, then per journey a ``BpmnWorkflow``,
      ``do_engine_steps``, each READY user task's data set and ``task.run()``, each message delivered with
      ``workflow.send_event(BpmnEvent(MessageEventDefinition(name), payload))``, engine steps after each;
  (b) (a) plus persistence as SpiffWorkflow ships it: ``BpmnWorkflowSerializer`` (spiff config)
      ``serialize_json`` at every wait state and ``deserialize_json`` before the next step;
  (e) Tether's engine layer alone (``engine.runtime.Runtime``: restore the state dict, sandboxed script
      engine, one command, domain events, the new state dict), no database, no HTTP: for the breakdown;
  (c) Tether through its HTTP API with full persistence: ``tether serve`` (1 worker) on a fresh database,
      the diagram and its form uploaded with ``POST /process-definitions`` (designer), then per journey
      ``POST /therapies``, per task ``GET /tasks?therapy_id=`` (the client must learn the task id; timed
      apart, not a step) and ``POST /tasks/{id}/complete``, per message ``POST /messages`` (by therapy id),
      all over one keep-alive ``requests.Session`` per user; each journey is checked to end ``completed``.

(c) runs on every backend (SQLite; PostgreSQL when a server is configured, see bench/_common.py). Each
way runs ``--warmup`` journeys that are not counted, then ``--journeys`` timed ones; the figures are the
mean and median step cost, and the ratio c/b (means) against the target c/b <= 3. ``--profile`` also
samples the server with py-spy during (c) when py-spy is installed and prints where the request time goes
(by kind of work, and per function of server/ and engine/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from itertools import pairwise

from ._common import Figure, add_people, backends, fresh_database, make_app, served

PROCESS_KEY = "bench_journey"
FORM_NAME = "bench-step.schema.json"
MESSAGES = ("courier.picked_up", "shipment.delivered")
TARGET_RATIO = 3.0
FORM = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Benchmark step",
    "type": "object",
    "required": ["step", "done", "operator"],
    "properties": {
        "step": {"type": "integer", "minimum": 0},
        "done": {"type": "boolean"},
        "operator": {"type": "string", "maxLength": 40},
        "note": {"type": "string", "maxLength": 200},
    },
    "additionalProperties": False,
}


def form_bytes() -> bytes:
    return json.dumps(FORM, indent=2).encode()


def task_data(step: int) -> dict:
    """Form data for the ``step``-th task (valid for ``FORM``)."""
    return {"step": step, "done": True, "operator": "bench", "note": f"step {step} done"}


def message_payload(name: str) -> dict:
    return {"tracking": "TRK-BENCH-1", "event": name}


def task_id_of(step: int) -> str:
    return f"Task_Step{step + 1:03d}"


def journey_diagram(tasks: int, key: str = PROCESS_KEY) -> bytes:
    """A diagram: start, ``tasks`` user tasks in the Coordinator lane, two message catch events, end."""
    nodes = (
        ["Start_Journey"]
        + [task_id_of(i) for i in range(tasks)]
        + [f"Event_Message{i + 1}" for i in range(len(MESSAGES))]
        + ["End_Journey"]
    )
    flows = [(f"Flow_{i + 1:03d}", source, target) for i, (source, target) in enumerate(pairwise(nodes))]
    incoming = {target: flow for flow, _, target in flows}
    outgoing = {source: flow for flow, source, _ in flows}

    def links(node: str) -> str:
        return (f"<bpmn:incoming>{incoming[node]}</bpmn:incoming>" if node in incoming else "") + (
            f"<bpmn:outgoing>{outgoing[node]}</bpmn:outgoing>" if node in outgoing else ""
        )

    parts = [f'<bpmn:startEvent id="Start_Journey" name="Referral">{links("Start_Journey")}</bpmn:startEvent>']
    for i in range(tasks):
        node = task_id_of(i)
        parts.append(
            f'<bpmn:userTask id="{node}" name="Step {i + 1}"><bpmn:extensionElements><spiffworkflow:properties>'
            f'<spiffworkflow:property name="formJsonSchemaFilename" value="{FORM_NAME}"/>'
            f"</spiffworkflow:properties></bpmn:extensionElements>{links(node)}</bpmn:userTask>"
        )
    for i, name in enumerate(MESSAGES):
        node = f"Event_Message{i + 1}"
        variable = name.replace(".", "_")
        parts.append(
            f'<bpmn:intermediateCatchEvent id="{node}" name="{name}">{links(node)}'
            f'<bpmn:messageEventDefinition id="MessageDef_{i + 1}" messageRef="Message_{i + 1}">'
            f"<bpmn:extensionElements><spiffworkflow:messageVariable>{variable}</spiffworkflow:messageVariable>"
            f"</bpmn:extensionElements></bpmn:messageEventDefinition></bpmn:intermediateCatchEvent>"
        )
    parts.append(f'<bpmn:endEvent id="End_Journey" name="Completed">{links("End_Journey")}</bpmn:endEvent>')
    parts += [
        f'<bpmn:sequenceFlow id="{flow}" sourceRef="{source}" targetRef="{target}"/>' for flow, source, target in flows
    ]
    lane = "".join(f"<bpmn:flowNodeRef>{node}</bpmn:flowNodeRef>" for node in nodes)
    messages = "".join(f'<bpmn:message id="Message_{i + 1}" name="{name}"/>' for i, name in enumerate(MESSAGES))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="Definitions_{key}" targetNamespace="http://tether.example/bpmn">
  {messages}
  <bpmn:process id="{key}" name="Benchmark journey ({tasks} tasks)" isExecutable="true">
    <bpmn:laneSet id="LaneSet_1"><bpmn:lane id="Lane_Coordinator" name="Coordinator">{lane}</bpmn:lane></bpmn:laneSet>
    {"".join(parts)}
  </bpmn:process>
</bpmn:definitions>
"""
    return xml.encode()


def summary(times: list[float]) -> dict:
    """Mean and median of step times, in ms."""
    return {"mean": statistics.fmean(times) * 1000, "median": statistics.median(times) * 1000, "steps": len(times)}


def describe(label: str, steps: dict[str, list[float]]) -> str:
    everything = [t for times in steps.values() for t in times]
    out = summary(everything)
    kinds = ", ".join(f"{kind} {summary(times)['median']:.2f}" for kind, times in steps.items() if times)
    return (
        f"  {label}: per step mean {out['mean']:.2f} ms, median {out['median']:.2f} ms over {out['steps']} steps"
        f" (median by kind, ms: {kinds})"
    )


def new_steps() -> dict[str, list[float]]:
    return {"start": [], "complete": [], "message": []}


# -- (a) and (b): SpiffWorkflow alone -------------------------------------------------------------------------
def raw_spec(diagram: bytes):
    from lxml import etree
    from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

    parser = SpiffBpmnParser()
    parser.add_bpmn_xml(etree.fromstring(diagram), filename=f"{PROCESS_KEY}.bpmn")
    return parser.get_spec(PROCESS_KEY), parser.get_subprocess_specs(PROCESS_KEY)


def raw_journey(spec, subprocess_specs, tasks: int, steps: dict[str, list[float]], serializer=None) -> None:
    """One journey on SpiffWorkflow alone; with ``serializer``, JSON out after each step and in before the next."""
    from SpiffWorkflow.bpmn.util.event import BpmnEvent
    from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
    from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition
    from SpiffWorkflow.util.task import TaskState

    clock = time.perf_counter
    began = clock()
    workflow = BpmnWorkflow(spec, subprocess_specs)
    workflow.do_engine_steps()
    saved = serializer.serialize_json(workflow) if serializer else None
    steps["start"].append(clock() - began)
    for step in range(tasks):
        began = clock()
        if serializer:
            workflow = serializer.deserialize_json(saved)
        ready = workflow.get_tasks(state=TaskState.READY, manual=True)
        if len(ready) != 1 or ready[0].task_spec.bpmn_id != task_id_of(step):
            raise RuntimeError(f"raw journey: expected {task_id_of(step)} ready, found {ready}")
        ready[0].data.update(task_data(step))
        ready[0].run()
        workflow.do_engine_steps()
        if serializer:
            saved = serializer.serialize_json(workflow)
        steps["complete"].append(clock() - began)
    for name in MESSAGES:
        began = clock()
        if serializer:
            workflow = serializer.deserialize_json(saved)
        workflow.send_event(BpmnEvent(MessageEventDefinition(name), message_payload(name)))
        workflow.do_engine_steps()
        if serializer:
            saved = serializer.serialize_json(workflow)
        steps["message"].append(clock() - began)
    if not workflow.completed:
        raise RuntimeError("raw journey did not complete")
    if workflow.data.get(MESSAGES[1].replace(".", "_")) != message_payload(MESSAGES[1]):
        raise RuntimeError("raw journey: the message payload is not in the workflow data")


def spiff_serializer():
    from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
    from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

    return BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))


class Recording:
    """A serializer that keeps its last output (to show the size of the saved state)."""

    def __init__(self, serializer):
        self.serializer, self.last = serializer, ""

    def serialize_json(self, workflow) -> str:
        self.last = self.serializer.serialize_json(workflow)
        return self.last

    def deserialize_json(self, text: str):
        return self.serializer.deserialize_json(text)


# -- (e): Tether's engine layer alone -------------------------------------------------------------------------
def engine_journey(runtime, tasks: int, steps: dict[str, list[float]]) -> None:
    """One journey through ``engine.runtime.Runtime`` (state dicts in and out, no database)."""
    clock = time.perf_counter
    began = clock()
    outcome = runtime.start({"patient_reference": "PT-BENCH", "site": "SITE-A"})
    steps["start"].append(clock() - began)
    for step in range(tasks):
        task = outcome.ready_tasks[0]
        began = clock()
        outcome = runtime.complete_task(outcome.state, task.task_id, task_data(step))
        steps["complete"].append(clock() - began)
    for name in MESSAGES:
        began = clock()
        outcome = runtime.deliver_message(outcome.state, name, message_payload(name))
        steps["message"].append(clock() - began)
    if not outcome.completed:
        raise RuntimeError("engine journey did not complete")


def tether_runtime(diagram: bytes):
    from engine.definition import load_definition, parse_form
    from engine.runtime import Runtime

    definition = load_definition(diagram, {FORM_NAME: parse_form(FORM_NAME, form_bytes())}, set())
    return Runtime(definition)


def in_memory(label: str, journey: Callable[[dict], None], journeys: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        journey(new_steps())
    steps = new_steps()
    for _ in range(journeys):
        journey(steps)
    print(describe(label, steps), flush=True)
    return steps


# -- (c): Tether over HTTP ------------------------------------------------------------------------------------
def session(token: str):
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def expect(response, status: int, what: str) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def http_journey(
    base: str, coordinator, integrator, tasks: int, number: int, steps: dict[str, list[float]], lookups: list[float]
) -> str:
    """One journey over the API; returns the therapy's final status."""
    clock = time.perf_counter
    began = clock()
    response = coordinator.post(
        f"{base}/therapies",
        json={"process_key": PROCESS_KEY, "site": "SITE-A", "patient": {"reference": f"PT-{number:05d}"}},
    )
    steps["start"].append(clock() - began)
    therapy_id = expect(response, 201, "start")["id"]
    for step in range(tasks):
        began = clock()
        listed = expect(coordinator.get(f"{base}/tasks", params={"therapy_id": therapy_id}), 200, "task list")
        lookups.append(clock() - began)
        task = listed["items"][0]
        if task["activity_id"] != task_id_of(step):
            raise RuntimeError(f"expected {task_id_of(step)} to be ready, found {task['activity_id']}")
        began = clock()
        response = coordinator.post(f"{base}/tasks/{task['id']}/complete", json={"data": task_data(step)})
        steps["complete"].append(clock() - began)
        expect(response, 200, f"complete {task['activity_id']}")
    for name in MESSAGES:
        began = clock()
        response = integrator.post(
            f"{base}/messages", json={"name": name, "therapy_id": therapy_id, "payload": message_payload(name)}
        )
        steps["message"].append(clock() - began)
        expect(response, 200, f"message {name}")
    return expect(coordinator.get(f"{base}/therapies/{therapy_id}"), 200, "therapy")["status"]


def deploy_over_http(base: str, designer, diagram: bytes) -> dict:
    """Upload the diagram with its form as the designer."""
    files = [
        ("bpmn", (f"{PROCESS_KEY}.bpmn", diagram, "application/xml")),
        ("forms", (FORM_NAME, form_bytes(), "application/json")),
    ]
    response = designer.post(f"{base}/process-definitions", files=files)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"deploy: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def over_http(backend: str, diagram: bytes, tasks: int, journeys: int, warmup: int, profile: bool) -> dict:
    """Run the journeys against a served Tether on a fresh ``backend`` database."""
    with fresh_database(backend) as url:
        app = make_app(url)
        tokens = add_people(app)
        with app.app_context():
            from server.store.extensions import db

            db.engine.dispose()
        with served(url, workers=1) as (base, process):
            designer, coordinator = session(tokens["designer"]), session(tokens["coordinator"])
            integrator = session(tokens["integrator"])
            deployed = deploy_over_http(base, designer, diagram)
            print(
                f"  {backend}: deployed {deployed['key']} v{deployed['version']} over HTTP; served at {base}",
                flush=True,
            )
            statuses: list[str] = []
            lookups: list[float] = []
            for number in range(warmup):
                statuses.append(http_journey(base, coordinator, integrator, tasks, number, new_steps(), []))
            steps = new_steps()
            sampler = start_sampler(process.pid) if profile else None
            began, cpu = time.perf_counter(), server_cpu_seconds(process.pid)
            for number in range(warmup, warmup + journeys):
                statuses.append(http_journey(base, coordinator, integrator, tasks, number, steps, lookups))
            wall, cpu = time.perf_counter() - began, server_cpu_seconds(process.pid) - cpu
            stop_sampler(sampler)
        completed = sum(1 for status in statuses if status == "completed")
        print(describe(f"(c) Tether over HTTP, {backend}", steps), flush=True)
        statements = count_statements(app, tokens, backend)
        print(
            f"    plus the task lookup before each completion (GET /tasks?therapy_id=): median "
            f"{statistics.median(lookups) * 1000:.2f} ms; whole journeys incl. lookups {wall / journeys * 1000:.0f}"
            f" ms each; {completed} of {len(statuses)} therapies ended 'completed'",
            flush=True,
        )
        count = sum(len(times) for times in steps.values())
        print(
            f"    the server's CPU over the timed journeys: {cpu * 1000 / count:.2f} ms per step (the lookups' share "
            f"included; {cpu:.2f} s for {count} steps and {len(lookups)} lookups)",
            flush=True,
        )
        return {
            "steps": steps,
            "completed": completed,
            "journeys": len(statuses),
            "statements": statements,
            "cpu_per_step": cpu * 1000 / count,
        }


def server_cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) used so far by process ``pid`` and every process under it (``tether serve``
    and its worker), from /proc (``engine.isolation.cpu_seconds`` for each); 0 where /proc cannot be read."""
    import contextlib
    from pathlib import Path

    from engine.isolation import cpu_seconds

    total, pending, seen = 0.0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total += cpu_seconds(current) or 0.0
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return total


def count_statements(app, tokens: dict[str, str], backend: str) -> int:
    """Start one more journey in this process (Flask's test client, the same code and database as the served
    run) and count the SQL statements its first task completion sends; prints them by kind and table."""
    from server.store.extensions import db
    from server.store.statements import counted, summary

    client = app.test_client()
    headers = {"Authorization": f"Bearer {tokens['coordinator']}"}

    def answer(response, status: int, what: str) -> dict:
        if response.status_code != status:
            raise RuntimeError(f"{what}: HTTP {response.status_code} {response.get_data(as_text=True)[:300]}")
        return response.get_json()

    body = {"process_key": PROCESS_KEY, "site": "SITE-A", "patient": {"reference": "PT-COUNT"}}
    therapy = answer(client.post("/api/v1/therapies", json=body, headers=headers), 201, "start (count)")
    listed = client.get(f"/api/v1/tasks?therapy_id={therapy['id']}", headers=headers)
    task = answer(listed, 200, "task list (count)")["items"][0]
    with app.app_context():
        engine = db.engine
    with counted(engine) as statements:
        response = client.post(f"/api/v1/tasks/{task['id']}/complete", json={"data": task_data(0)}, headers=headers)
    answer(response, 200, "complete (count)")
    print(f"    statements of one completion on {backend}: {summary(statements)}", flush=True)
    return len(statements)


# -- optional: py-spy sampling of the server (also used by bench.throughput) ---------------------------------
# What a sample's leaf frame is spent on, first match wins (file fragments as py-spy prints them).
COST_KINDS = [
    (
        "database driver (statement execution, commit)",
        ("sqlite3", "psycopg", "do_execute", "do_commit", "do_rollback", "do_executemany"),
    ),
    ("JSON encode/decode", ("json/",)),
    ("copy.deepcopy", ("copy.py",)),
    ("SpiffWorkflow (engine, serializer)", ("SpiffWorkflow/",)),
    ("SQLAlchemy (ORM, core, result rows)", ("sqlalchemy/",)),
    ("jsonschema (form validation)", ("jsonschema/", "referencing/")),
    ("RestrictedPython sandbox", ("RestrictedPython/", "engine/sandbox.py")),
    (
        "HTTP (gunicorn, werkzeug, flask, sockets)",
        ("gunicorn/", "werkzeug/", "flask/", "socket.py", "selectors.py", "ssl.py", "http/"),
    ),
    ("Tether code (server/, engine/)", ("server/", "engine/")),
]
REQUEST_FRAMES = ("(server/api/", "(server/access/auth.py")


def start_sampler(pid: int, rate: int = 100):
    """Start ``py-spy record`` on ``pid`` and its children (raw collapsed stacks); None without py-spy."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  --profile: py-spy is not installed (pip install py-spy); skipped", flush=True)
        return None
    output = Path(tempfile.mkdtemp(prefix="tether-bench-spy-")) / "profile.txt"
    command = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--format",
        "raw",
        "--nolineno",
        "--rate",
        str(rate),
        "--nonblocking",
        "--output",
        str(output),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    time.sleep(1.0)  # py-spy attaches
    return process, output


def stop_sampler(sampler) -> None:
    """Stop py-spy and print what the request-handling samples were spent on."""
    import signal

    if sampler is None:
        return
    import shutil

    process, output = sampler
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    print_profile(output)
    shutil.rmtree(output.parent, ignore_errors=True)


def print_profile(path, top: int = 18) -> None:
    """Shares of the samples that handle requests: by kind of work (leaf frame), then inclusive per function
    of server/ and engine/ (py-spy's raw format: ``frame;frame;... count`` per line)."""
    from collections import Counter

    try:
        lines = open(path).read().splitlines()  # noqa: SIM115
    except OSError:
        print("  --profile: no samples were written", flush=True)
        return
    kinds: Counter = Counter()
    inclusive: Counter = Counter()
    total = everything = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        weight, frames = int(count), stack.split(";")
        everything += weight
        if not any(marker in frame for frame in frames for marker in REQUEST_FRAMES):
            continue  # the scheduler, the dispatcher, gunicorn's main loop
        total += weight
        leaf = frames[-1]
        kinds[next((kind for kind, marks in COST_KINDS if any(m in leaf for m in marks)), "other")] += weight
        for frame in set(frames):
            if "(server/" in frame or "(engine/" in frame:
                inclusive[frame] += weight
    if not total:
        print("  --profile: no request samples", flush=True)
        return
    print(
        f"  --profile: {total} of {everything} samples were handling requests; by kind of work (leaf frame):",
        flush=True,
    )
    for kind, weight in kinds.most_common():
        print(f"    {weight / total:6.1%}  {kind}", flush=True)
    print("    inclusive, per function of server/ and engine/:", flush=True)
    for frame, weight in inclusive.most_common(top):
        print(f"    {weight / total:6.1%}  {frame[:140]}", flush=True)


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; print the details and return the headline figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--journeys", type=int, default=20, help="timed journeys per way (default 20)")
    parser.add_argument("--tasks", type=int, default=10, help="user tasks per journey (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="journeys run first and not counted (default 2)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="run (c) on this backend only")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy during (c)")
    options = parser.parse_args(argv if argv is not None else [])
    if options.tasks < 1 or options.journeys < 1:
        parser.error("--tasks and --journeys must be at least 1")
    diagram = journey_diagram(options.tasks)
    per_journey = options.tasks + len(MESSAGES) + 1
    print(
        f"Journey: start, {options.tasks} user tasks, {len(MESSAGES)} messages, completion = {per_journey} steps; "
        f"{options.journeys} timed journeys after {options.warmup} warm-up; {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at start",
        flush=True,
    )

    spec, subprocess_specs = raw_spec(diagram)
    serializer = Recording(spiff_serializer())
    a = in_memory(
        "(a) SpiffWorkflow in memory",
        lambda steps: raw_journey(spec, subprocess_specs, options.tasks, steps),
        options.journeys,
        options.warmup,
    )
    b = in_memory(
        "(b) SpiffWorkflow + serialize_json/deserialize_json at each wait state",
        lambda steps: raw_journey(spec, subprocess_specs, options.tasks, steps, serializer),
        options.journeys,
        options.warmup,
    )
    final = json.loads(serializer.last)
    spec_size = len(json.dumps(final.get("spec"))) + len(json.dumps(final.get("subprocess_specs")))
    print(
        f"    (b)'s JSON at the end of a journey: {len(serializer.last) / 1024:.0f} KiB, of which the spec "
        f"{spec_size / 1024:.0f} KiB",
        flush=True,
    )
    runtime = tether_runtime(diagram)
    e = in_memory(
        "(e) Tether engine alone (engine.runtime.Runtime, state dicts, no DB, no HTTP)",
        lambda steps: engine_journey(runtime, options.tasks, steps),
        options.journeys,
        options.warmup,
    )

    b_mean = summary([t for times in b.values() for t in times])["mean"]
    figures = [
        Figure(
            "overhead: per-step cost, (a) SpiffWorkflow in memory",
            summary([t for times in a.values() for t in times])["mean"],
            "ms",
            note="mean",
        ),
        Figure("overhead: per-step cost, (b) SpiffWorkflow + JSON at each wait state", b_mean, "ms", note="mean"),
        Figure(
            "overhead: per-step cost, (e) Tether engine alone, no DB/HTTP",
            summary([t for times in e.values() for t in times])["mean"],
            "ms",
            note="mean",
        ),
    ]
    for backend in backends(options.only):
        result = over_http(backend, diagram, options.tasks, options.journeys, options.warmup, options.profile)
        c = summary([t for times in result["steps"].values() for t in times])
        ratio = c["mean"] / b_mean
        median_ratio = c["median"] / summary([t for times in b.values() for t in times])["median"]
        ok = result["completed"] == result["journeys"]
        print(
            f"  c/b on {backend}: {ratio:.1f} (means), {median_ratio:.1f} (medians); target <= {TARGET_RATIO:g}: "
            f"{'met' if ratio <= TARGET_RATIO and ok else 'NOT met'}",
            flush=True,
        )
        figures.append(
            Figure(
                f"overhead: per-step cost, (c) Tether over HTTP, {backend}",
                c["mean"],
                "ms",
                note=f"mean; median {c['median']:.1f} ms; {result['completed']}/{result['journeys']}"
                " journeys completed",
            )
        )
        figures.append(
            Figure(
                f"overhead: the server's CPU per step over HTTP, {backend}",
                result["cpu_per_step"],
                "ms",
                note="the task lookups' share included",
            )
        )
        figures.append(
            Figure(
                f"overhead: SQL statements of one task completion, {backend}",
                result["statements"],
                "statements",
                target="≤ 8" if backend == "postgresql" else "",
                met=result["statements"] <= 8 if backend == "postgresql" else None,
            )
        )
        figures.append(
            Figure(
                f"overhead: c/b, {backend}",
                ratio,
                "x",
                target=f"≤ {TARGET_RATIO:g}",
                met=ratio <= TARGET_RATIO and ok,
                note=f"medians {median_ratio:.1f}x",
            )
        )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
