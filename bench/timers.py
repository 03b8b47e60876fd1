"""Timer precision with 10,000 timers armed: how late does each fire, and how long does re-arming take?

    python -m bench.timers [--timers 10000] [--window 60] [--lead 15] [--only scheduler|engine] [--database URL]

Seeds ``--timers`` therapies of a one-timer diagram (Start -> timeDate -> End) whose timers come due evenly
over ``--window`` seconds, starting ``--lead`` seconds after seeding. Seeding starts one therapy through the
use case and copies its row (engine state with the due time set, ``next_due_at``, a fresh id and COI) in bulk:
starting 10,000 therapies one by one would take minutes, and the copies are what the scheduler sees at start.
The timer scheduler then starts as ``tether serve`` starts it and re-arms every timer from the database
(timed). Two passes, each on a fresh database: first each job only records when it started (the scheduler's
own precision with 10,000 timers armed), then each fires its therapy through the real path (claim the row,
engine steps, save, audit, outbox, commit) and records when its transaction committed. Both print the
lateness (that moment minus the due time): p50, p99 and max, against the target p99 <= 1 s, and the second
the firings per second the process sustained.

The database is a SQLite file in a temporary folder unless ``--database`` (or TETHER_BENCH_DATABASE_URL)
names another, e.g. a PostgreSQL database that may be emptied.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

TARGET_P99 = 1.0  # seconds

DIAGRAM = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_bench_timer"
                  targetNamespace="http://tether.example/bpmn">
  <bpmn:process id="bench_timer" name="Benchmark timer" isExecutable="true">
    <bpmn:startEvent id="Start_Planned" name="Planned"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:intermediateCatchEvent id="Timer_Due" name="Due">
      <bpmn:incoming>Flow_1</bpmn:incoming><bpmn:outgoing>Flow_2</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDate>due_at</bpmn:timeDate></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="End_Done" name="Done"><bpmn:incoming>Flow_2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_Planned" targetRef="Timer_Due"/>
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Timer_Due" targetRef="End_Done"/>
  </bpmn:process>
</bpmn:definitions>
"""


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _app(database_url: str):
    from server import create_app
    from server.cli import upgrade_database

    app = create_app({"DATABASE_URL": database_url, "SCHEDULER": False, "SECRET_KEY": "bench"})
    upgrade_database(app)
    return app


def seed(app, count: int, first_due, window: float) -> dict[str, object]:
    """Start one therapy through the use case and copy it ``count - 1`` times; returns due time by therapy id."""
    from sqlalchemy import insert

    from engine.coi import issue_coi
    from server import accounts
    from server.definitions import deploy
    from server.extensions import db
    from server.models import Therapy
    from server.therapies import start_therapy

    with app.app_context():
        deploy(DIAGRAM, {}, "bench")
        accounts.add_site("SITE-A", "Bench centre", "treatment-centre", "bench")
        template = start_therapy("bench_timer", None, "SITE-A", "PT-BENCH", {"due_at": first_due.isoformat()},
                                 "bench")
        columns = {c.key: getattr(template, c.key) for c in Therapy.__mapper__.column_attrs}
        timer = next(t for t in template.state["tasks"].values() if t["internal_data"].get("event_value"))
        dues = {template.id: first_due}
        rows = []
        for i in range(1, count):
            due = first_due + timedelta(seconds=window * i / count)
            state = copy.deepcopy(template.state)
            state["tasks"][timer["id"]]["internal_data"]["event_value"] = due.isoformat()
            therapy_id = str(uuid.uuid4())
            coi = issue_coi(app.config["FACILITY_FIN"], first_due.year % 100, 1_000_000 + i).value
            rows.append({**columns, "id": therapy_id, "coi": coi, "patient_reference": f"PT-{i:05d}", "state": state,
                         "next_due_at": due, "row_version": 1})
            dues[therapy_id] = due
        for start in range(0, len(rows), 1000):
            db.session.execute(insert(Therapy), rows[start:start + 1000])
        db.session.commit()
    return dues


def run(count: int, window: float, lead: float, database_url: str, *, engine: bool) -> dict:
    """Seed, start the scheduler, wait for every timer and return the measurements.

    With ``engine`` each job runs the real firing path; without, the job only records when it started (the
    scheduler's own precision with ``count`` timers armed, whatever the database can take).
    """
    from server import therapies
    from server.models import utcnow
    from server.scheduler import TimerScheduler

    app = _app(database_url)
    seeding = time.perf_counter()
    dues = seed(app, count, utcnow() + timedelta(seconds=lead), window)
    seeded_in = time.perf_counter() - seeding

    started: dict[str, float] = {}
    committed: dict[str, float] = {}
    lock = threading.Lock()
    fire = therapies.fire_due_timers

    def measured(therapy_id: str, actor: str = "scheduler") -> bool:
        begin = utcnow()
        fired = fire(therapy_id, actor) if engine else True
        end = utcnow()
        if fired:
            with lock:  # the first firing counts (without the engine, the safety-net sweep calls again)
                started.setdefault(therapy_id, (begin - dues[therapy_id]).total_seconds())
                committed.setdefault(therapy_id, (end - dues[therapy_id]).total_seconds())
        return fired

    therapies.fire_due_timers = measured
    scheduler = TimerScheduler(app)
    try:
        arming = time.perf_counter()
        armed = scheduler.start()
        rearmed_in = time.perf_counter() - arming
        if not engine:  # nothing changes in the database, so the safety-net sweep would arm everything again
            scheduler.scheduler.remove_job("tether-sweep")
        first_due = min(dues.values())
        if utcnow() > first_due:
            print(f"warning: re-arming ended {(utcnow() - first_due).total_seconds():.1f} s after the first due time;"
                  " raise --lead")
        deadline = time.monotonic() + lead + window + 900
        while len(committed) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = (utcnow() - max(dues.values())).total_seconds()
    finally:
        scheduler.shutdown()
        therapies.fire_due_timers = fire
    return {"timers": count, "armed": armed, "window": window, "seeded_in": seeded_in, "rearmed_in": rearmed_in,
            "started": list(started.values()), "committed": list(committed.values()), "drained": drained,
            "database": database_url.split(":", 1)[0].split("+")[0], "engine": engine}


def report(result: dict) -> str:
    """The figures as printed lines."""
    what = "real firing path" if result["engine"] else "scheduler only: each job records its start and returns"
    lines = [f"{result['timers']} timers due evenly over {result['window']:g} s, {what}; "
             f"{result['database']}, {os.cpu_count()} CPU cores",
             f"  seeding (bulk copy): {result['seeded_in']:.1f} s; start-up re-arm of {result['armed']} timers "
             f"from the database: {result['rearmed_in']:.2f} s"]
    labels = [("job started", result["started"])]
    if result["engine"]:
        labels.append(("fired (committed)", result["committed"]))
    for label, values in labels:
        if not values:
            lines.append(f"  {label}: nothing fired")
            continue
        lines.append(f"  lateness, {label}: p50 {statistics.median(values):.3f} s, p99 {percentile(values, .99):.3f}"
                     f" s, max {max(values):.3f} s over {len(values)} timers")
    values = labels[-1][1]
    if result["engine"] and values:
        rate = len(values) / (result["window"] + max(result["drained"], 0))
        lines.append(f"  throughput: {rate:.0f} firings/s (last one committed {result['drained']:.1f} s after the "
                     "last due time)")
    p99 = percentile(values, .99) if values else float("inf")
    verdict = "met" if len(values) == result["timers"] and p99 <= TARGET_P99 else "NOT met"
    lines.append(f"  target p99 lateness <= {TARGET_P99:g} s: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark with command-line options and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__.split("\n")[0])
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds over which the timers come due")
    parser.add_argument("--lead", type=float, default=15.0, help="seconds from seeding to the first due time")
    parser.add_argument("--database", default=os.environ.get("TETHER_BENCH_DATABASE_URL"),
                        help="an empty database to use (default: a SQLite file in a temporary folder)")
    parser.add_argument("--only", choices=("scheduler", "engine"), help="run one of the two passes")
    options = parser.parse_args(argv if argv is not None else [])
    for engine in (False, True):
        if options.only and options.only != ("engine" if engine else "scheduler"):
            continue
        with tempfile.TemporaryDirectory(prefix="tether-bench-") as folder:
            url = options.database or f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
            if options.database and not options.only:
                parser.error("--database needs --only (each pass needs an empty database)")
            print(report(run(options.timers, options.window, options.lead, url, engine=engine)), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
