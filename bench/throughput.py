"""Task completions per second through the HTTP API with concurrent clients, and a check for lost updates.

    python -m bench.throughput [--clients 16] [--duration 15] [--tasks 10] [--per-client N]
                               [--configs sqlite:1,sqlite:2,sqlite:4,postgresql:1,postgresql:2,postgresql:4]
                               [--repeat 3] [--threads 8] [--profile] [--cpu THERAPIES]

Each configuration (backend:workers) gets a fresh database and a real ``tether serve`` process. Before the
clock starts, every client gets a site and a coordinator of its own (so no two clients ever see the same
task) and ``--per-client`` therapies are started at its site through the use case
(``server.workflow.therapies.start_therapy``, in an app context) on the benchmark journey of ``bench.overhead``
(``--tasks`` user tasks one after the other, each with a JSON Schema form, then two messages). Every
therapy then waits at a user task, and each completion readies the therapy's next one.

``--clients`` threads, each with its own keep-alive ``requests.Session`` and token, then run for
``--duration`` seconds: fetch the client's inbox (``GET /tasks?limit=500``, all its READY tasks), complete
each listed task (``POST /tasks/{id}/complete`` with valid form data), and again. Reported: completions per
second (wall clock, inbox reads included), completion latency p50/p95/p99, and every non-2xx answer (a 409
is an error here: no two clients share a task).

Afterwards, with the server stopped: the audit chain must verify (``server.store.audit.verify``); the number of
``task.completed`` audit entries must equal the number of 2xx completions; and for every therapy, its
completed task rows, the completed user tasks in its stored engine state and its ``task.completed`` entries
must each equal the completions the clients were answered 2xx for. Any difference is a lost (or phantom)
update. Targets: >= 300 completions/s on a 2-core machine, no errors, no lost updates, and from 1 to 2 to 4
server processes (workers) no loss of throughput.

Every configuration runs ``--repeat`` times (3 by default), in rounds (each configuration once, then each
again), so that a machine busy with other work weighs on all of them alike; the figure is the median of the
runs, printed with each run's rate and the load average as it started.

``--cpu THERAPIES`` measures instead what the rate is made of on a shared machine, where the wall clock says more
about the other work than about Tether: the CPU time the app spends on one completion, in this process (Flask's
test client, no HTTP server, no concurrent clients), over the tasks of ``THERAPIES`` seeded therapies; the median
of five rounds per backend. With the server's CPU per completion at C ms, two cores cannot complete more than
2000 / C per second, whatever the database does (less with the clients on the same cores).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import threading
import time
from collections import Counter

from ._common import Figure, add_people, backends, fresh_database, make_app, percentile, served
from .overhead import FORM_NAME, PROCESS_KEY, form_bytes, journey_diagram, start_sampler, stop_sampler, task_data

TARGET_RATE = 300.0  # completions per second
DEFAULT_CONFIGS = "sqlite:1,sqlite:2,sqlite:4,postgresql:1,postgresql:2,postgresql:4"


def seed(app, clients: int, per_client: int, tasks: int) -> list[dict]:
    """Deploy the journey, and give each client a site, a coordinator token and ``per_client`` therapies."""
    from server.access import accounts
    from server.store.extensions import db
    from server.workflow.definitions import deploy
    from server.workflow.therapies import start_therapy

    seeded = []
    with app.app_context():
        deploy(journey_diagram(tasks), {FORM_NAME: form_bytes()}, "bench")
        for k in range(clients):
            code = f"BENCH-{k + 1:02d}"
            accounts.add_site(code, f"Bench centre {k + 1}", "treatment-centre", "bench")
            username = f"bench-client-{k + 1:02d}"
            accounts.add_user(username, ["coordinator"], [code], f"Bench client {k + 1}", None, actor="bench")
            token = accounts.issue_token(username, "bench", actor="bench")
            db.session.commit()
            therapies = [
                start_therapy(PROCESS_KEY, None, code, f"PT-{k + 1:02d}-{i:04d}", None, "bench").id
                for i in range(per_client)
            ]
            seeded.append({"site": code, "token": token, "therapies": therapies})
        db.session.commit()
        db.engine.dispose()
    return seeded


class Client(threading.Thread):
    """One API client: its own session and token, its own site's tasks."""

    def __init__(self, base: str, token: str, start: threading.Barrier, deadline: list[float]):
        super().__init__(daemon=True)
        import requests

        self.base, self.start_barrier, self.deadline = base, start, deadline
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.latencies: list[float] = []
        self.inbox_latencies: list[float] = []
        self.done: Counter = Counter()  # 2xx completions by therapy id
        self.errors: Counter = Counter()  # "status code" -> count
        self.finished_at = 0.0
        self.ran_out = False

    def inbox(self) -> list[dict] | None:
        began = time.perf_counter()
        response = self.http.get(f"{self.base}/tasks", params={"limit": 500})
        self.inbox_latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            self.errors[f"inbox {response.status_code}"] += 1
            return None
        return response.json()["items"]

    def run(self) -> None:
        self.inbox()  # connect and warm up before the clock starts
        self.start_barrier.wait()
        clock = time.perf_counter
        failures = 0
        while clock() < self.deadline[0] and failures < 20:
            items = self.inbox()
            if items is None:
                failures += 1
                continue
            if not items:
                self.ran_out = True
                break
            for item in items:
                if clock() >= self.deadline[0]:
                    break
                step = int(item["activity_id"].rsplit("Step", 1)[1]) - 1
                began = clock()
                try:
                    response = self.http.post(
                        f"{self.base}/tasks/{item['id']}/complete", json={"data": task_data(step)}
                    )
                except Exception as exc:  # a dropped connection is an error like any other
                    self.errors[f"exception {type(exc).__name__}"] += 1
                    failures += 1
                    continue
                self.latencies.append(clock() - began)
                if 200 <= response.status_code < 300:
                    self.done[item["therapy_id"]] += 1
                else:
                    code = ""
                    try:
                        code = response.json()["error"]["code"]
                    except Exception:  # noqa: S110 - a non-JSON error body keeps only its status
                        pass
                    self.errors[f"{response.status_code} {code}".strip()] += 1
                    failures += 1
        self.finished_at = clock()


def check(app, clients: list[Client]) -> dict:
    """Compare what the clients were told with what the database holds."""
    from SpiffWorkflow.util.task import TaskState
    from sqlalchemy import func, select

    from server.store import audit
    from server.store.extensions import db
    from server.store.models import AuditEntry, TaskRecord, Therapy

    told: Counter = Counter()
    for client in clients:
        told.update(client.done)
    with app.app_context():
        chain = audit.verify()
        audited = dict(
            db.session.execute(
                select(AuditEntry.therapy_id, func.count())
                .where(AuditEntry.action == "task.completed")
                .group_by(AuditEntry.therapy_id)
            ).all()
        )
        rows = dict(
            db.session.execute(
                select(TaskRecord.therapy_id, func.count())
                .where(TaskRecord.status == "completed")
                .group_by(TaskRecord.therapy_id)
            ).all()
        )
        in_state = {}
        for therapy_id, state in db.session.execute(select(Therapy.id, Therapy.state)):
            in_state[therapy_id] = sum(
                1
                for task in state["tasks"].values()
                if task["task_spec"].startswith("Task_Step") and task["state"] == TaskState.COMPLETED
            )
        db.session.rollback()
        db.engine.dispose()
    lost, mismatched = 0, []
    for therapy_id in set(in_state) | set(told):
        expected = told.get(therapy_id, 0)
        found = {
            "task rows": rows.get(therapy_id, 0),
            "engine state": in_state.get(therapy_id, 0),
            "audit entries": audited.get(therapy_id, 0),
        }
        worst = max(abs(value - expected) for value in found.values())
        if worst:
            lost += worst
            mismatched.append((therapy_id, expected, found))
    return {
        "chain": chain,
        "audited": sum(audited.values()),
        "told": sum(told.values()),
        "lost": lost,
        "mismatched": mismatched,
        "therapies": len(in_state),
    }


def run(backend: str, workers: int, options) -> dict:
    """One configuration: seed, serve, drive the clients for the duration, stop, check."""
    with fresh_database(backend) as url:
        app = make_app(url)
        add_people(app)
        began = time.perf_counter()
        seeded = seed(app, options.clients, options.per_client, options.tasks)
        seeded_in = time.perf_counter() - began
        therapies = options.clients * options.per_client
        print(
            f"  {backend}, {workers} worker(s) x {options.threads} threads: seeded {therapies} therapies "
            f"({therapies * options.tasks} completions available) in {seeded_in:.1f} s",
            flush=True,
        )
        with served(url, workers=workers, threads=options.threads) as (base, process):
            deadline = [math.inf]
            barrier = threading.Barrier(options.clients + 1)
            clients = [Client(base, entry["token"], barrier, deadline) for entry in seeded]
            for client in clients:
                client.start()
            sampler = start_sampler(process.pid) if options.profile else None
            barrier.wait()
            cpu, started = time.process_time(), time.perf_counter()
            deadline[0] = started + options.duration
            for client in clients:
                client.join()
            elapsed = max(client.finished_at for client in clients) - started
            client_cpu = time.process_time() - cpu
            stop_sampler(sampler)
        result = check(app, clients)
    latencies = [t for client in clients for t in client.latencies]
    inbox = [t for client in clients for t in client.inbox_latencies]
    errors: Counter = Counter()
    for client in clients:
        errors.update(client.errors)
    completions = sum(sum(client.done.values()) for client in clients)
    rate = completions / elapsed if elapsed > 0 else 0.0
    result.update({"rate": rate, "errors": sum(errors.values()), "completions": completions})
    ran_out = sum(1 for client in clients if client.ran_out)
    print(
        f"    {completions} completions in {elapsed:.1f} s = {rate:.0f}/s "
        f"(target >= {TARGET_RATE:g}/s: {'met' if rate >= TARGET_RATE else 'NOT met'})",
        flush=True,
    )
    if latencies:
        print(
            f"    completion latency: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p95 "
            f"{percentile(latencies, 0.95) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max "
            f"{max(latencies) * 1000:.1f} ms; inbox reads: {len(inbox)}, median "
            f"{statistics.median(inbox) * 1000:.1f} ms",
            flush=True,
        )
    print(
        f"    non-2xx answers: {sum(errors.values())}"
        + (f" ({dict(errors)})" if errors else "")
        + (f"; {ran_out} client(s) ran out of tasks" if ran_out else "")
        + f"; client process CPU {client_cpu / elapsed:.0%} of one core",
        flush=True,
    )
    chain = result["chain"]
    print(
        f"    after the run: audit chain {'verifies' if chain['ok'] else 'BROKEN'} ({chain['checked']} entries); "
        f"task.completed entries {result['audited']} vs 2xx completions {result['told']}; therapies whose "
        f"rows/state/audit differ from what clients were told: {len(result['mismatched'])} "
        f"(lost or phantom updates: {result['lost']})",
        flush=True,
    )
    for therapy_id, expected, found in result["mismatched"][:5]:
        print(f"      {therapy_id}: told {expected}, found {found}", flush=True)
    return result


def cpu_per_completion(backend: str, therapies: int, tasks: int, rounds: int = 5) -> list[float]:
    """The server's CPU time of one completion, in ms, without HTTP and without the machine's other work: one
    client's ``therapies`` seeded on a fresh database, then their tasks completed through the app in this process
    (Flask's test client, as the HTTP route would: token, checks, step, commit, answer), each next task taken from
    the answer's ``next_tasks``. Ten completions warm up; the rest are timed in ``rounds`` rounds with
    ``time.process_time``, which counts this process's CPU only (waits for a core or for the database are left out;
    PostgreSQL's own CPU is not counted). Returns the CPU per completion of each round."""
    with fresh_database(backend) as url:
        app = make_app(url)
        seeded = seed(app, 1, therapies, tasks)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {seeded[0]['token']}"}
        listed = client.get("/api/v1/tasks?limit=500", headers=headers).get_json()["items"]
        todo = [(item["id"], int(item["activity_id"].rsplit("Step", 1)[1]) - 1) for item in listed]

        def complete(batch: list[tuple[str, int]]) -> list[tuple[str, int]]:
            made_ready = []
            for task_id, step in batch:
                answer = client.post(
                    f"/api/v1/tasks/{task_id}/complete", json={"data": task_data(step)}, headers=headers
                )
                if answer.status_code != 200:
                    raise RuntimeError(f"completion answered {answer.status_code}: {answer.get_data(as_text=True)}")
                made_ready += [(task["id"], step + 1) for task in answer.get_json()["next_tasks"]]
            return made_ready

        todo = complete(todo[:10]) + todo[10:]
        size = max(1, (len(todo) - 1) // rounds)
        per_round = []
        for _round in range(rounds):
            batch, todo = todo[:size], todo[size:]
            began = time.process_time()
            todo += complete(batch)
            per_round.append((time.process_time() - began) / len(batch) * 1000)
        from server.store.extensions import db

        with app.app_context():
            db.engine.dispose()
        return per_round


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; print the details and return the headline figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads (default 16)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds each configuration runs (default 15)")
    parser.add_argument("--tasks", type=int, default=10, help="user tasks per therapy (default 10)")
    parser.add_argument(
        "--per-client",
        type=int,
        default=None,
        help="therapies seeded per client (default: enough for the target rate over the duration)",
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per server worker (default 8)")
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help=f"backend:workers, comma-separated (default {DEFAULT_CONFIGS}; PostgreSQL ones run "
        "only when a server is configured)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration; the median counts")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during each measurement and print where the time goes",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=0,
        metavar="THERAPIES",
        help="instead: the server's CPU per completion in this process, over this many seeded therapies' tasks "
        "(for example 160), on each backend of --configs",
    )
    options = parser.parse_args(argv if argv is not None else [])
    if options.cpu:
        figures = []
        wanted = dict.fromkeys(item.partition(":")[0].strip() for item in options.configs.split(","))
        available = backends() if "postgresql" in wanted else ["sqlite"]
        for backend in (backend for backend in wanted if backend in available):
            rounds = cpu_per_completion(backend, options.cpu, options.tasks)
            middle = statistics.median(rounds)
            each = ", ".join(f"{value:.2f}" for value in rounds)
            print(f"CPU per completion in process, {backend}: median {middle:.2f} ms (rounds: {each} ms)", flush=True)
            figures.append(Figure(f"throughput: CPU per completion in process, {backend}", middle, " ms", note=each))
        return figures
    if options.per_client is None:
        options.per_client = max(1, math.ceil(TARGET_RATE * options.duration * 1.2 / (options.clients * options.tasks)))
    configs = []
    for item in options.configs.split(","):
        backend, _, workers = item.strip().partition(":")
        if backend not in ("sqlite", "postgresql") or not workers.isdigit():
            parser.error(f"--configs: '{item}' is not backend:workers (sqlite:1, postgresql:2)")
        configs.append((backend, int(workers)))
    available = backends() if any(b == "postgresql" for b, _ in configs) else ["sqlite"]
    print(
        f"{options.clients} clients, {options.duration:g} s per configuration, {os.cpu_count()} CPU cores, load "
        f"average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    figures, problems, notes = [], 0, []
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (backend, workers) -> (rate, load) per run
    for _round in range(options.repeat):
        for backend, workers in configs:
            if backend not in available:
                continue
            load = os.getloadavg()[0]
            result = run(backend, workers, options)
            runs.setdefault((backend, workers), []).append((result["rate"], load))
            label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
            bad = (
                result["errors"]
                + result["lost"]
                + (0 if result["chain"]["ok"] else 1)
                + abs(result["audited"] - result["told"])
            )
            problems += bad
            if bad:
                notes.append(
                    f"{label}: {result['errors']} errors, {result['lost']} lost"
                    + ("" if result["chain"]["ok"] else ", chain broken")
                )
    notes = notes or [f"none in {sum(len(measured) for measured in runs.values())} runs"]
    medians: dict[tuple[str, int], float] = {}
    for (backend, workers), measured in runs.items():
        rates = [rate for rate, _load in measured]
        medians[(backend, workers)] = median = statistics.median(rates)
        label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
        each = ", ".join(f"{rate:.0f}/s at load {load:.1f}" for rate, load in measured)
        print(f"throughput {label}: median {median:.1f}/s of {len(rates)} runs ({each})", flush=True)
        figures.append(
            Figure(
                f"throughput: task completions, {label}",
                median,
                "/s",
                target="≥ 300/s",
                met=median >= TARGET_RATE and not problems,
                note=f"{options.clients} clients; median of {len(rates)}: {each}",
            )
        )
    for backend in ("sqlite", "postgresql"):
        curve = [(workers, medians[(b, workers)]) for b, workers in sorted(medians) if b == backend]
        if len(curve) > 1:
            kept = min(rate for _workers, rate in curve[1:]) / curve[0][1]
            figures.append(
                Figure(
                    f"throughput: {backend}, {' → '.join(str(w) for w, _r in curve)} server processes, "
                    f"the least of the others over the first",
                    kept,
                    "x",
                    target="≥ 1 (no loss)",
                    met=kept >= 1.0,
                    note=" → ".join(f"{rate:.0f}/s" for _w, rate in curve),
                )
            )
    figures.append(
        Figure("throughput: errors / lost updates", problems, "", target="0", met=problems == 0, note="; ".join(notes))
    )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
