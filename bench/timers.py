"""Timer precision with 10,000 timers armed: how late does each fire, and how many firings can a process commit?

    python -m bench.timers [--timers 10000] [--due 3000] [--window 45] [--burst 2000] [--backend sqlite|postgresql]

Seeds ``--timers`` therapies of a one-timer diagram (Start -> timeDate -> End). ``--due`` of them come due
evenly over ``--window`` seconds (about 67 a second by default, a busy day of a large network compressed),
starting ``--lead`` seconds after seeding; the rest stay armed an hour later. Seeding starts one therapy
through the use case and copies its row (engine state with the due time set, ``next_due_at``, a fresh id
and COI) in bulk: starting 10,000 therapies one by one would take minutes, and the copies are what the
scheduler sees at start. The timer scheduler then starts as ``tether serve`` starts it and re-arms every
timer from the database (timed).

Three passes, each on a fresh database: (1) each job only records when it started (the scheduler's own
precision with 10,000 armed); (2) each job fires its therapy through the real path (claim the row, engine
steps, save, audit, outbox, commit) and records when its transaction committed; (3) a burst: ``--burst``
timers all due at the same moment, to measure how many firings per second one process commits. Lateness
is that moment minus the due time: p50, p99 and max, against the target p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
import uuid
from datetime import timedelta

from ._common import Figure, backends, fresh_database, make_app, percentile

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


def seed(app, count: int, due: int, first_due, window: float) -> dict[str, object]:
    """Start one therapy through the use case and copy it ``count - 1`` times; returns due time by therapy id.

    The first ``due`` come due evenly over ``window`` seconds from ``first_due``; the others an hour later.
    """
    from sqlalchemy import insert

    from engine.coi import issue_coi
    from server.access import accounts
    from server.store.extensions import db
    from server.store.models import Therapy
    from server.workflow.definitions import deploy
    from server.workflow.therapies import start_therapy

    with app.app_context():
        deploy(DIAGRAM, {}, "bench")
        accounts.add_site("SITE-A", "Bench centre", "treatment-centre", "bench")
        template = start_therapy("bench_timer", None, "SITE-A", "PT-BENCH", {"due_at": first_due.isoformat()}, "bench")
        columns = {c.key: getattr(template, c.key) for c in Therapy.__mapper__.column_attrs}
        timer = next(t for t in template.state["tasks"].values() if t["internal_data"].get("event_value"))
        dues = {template.id: first_due}
        rows = []
        for i in range(1, count):
            when = first_due + (timedelta(seconds=window * i / due) if i < due else timedelta(hours=1))
            state = copy.deepcopy(template.state)
            state["tasks"][timer["id"]]["internal_data"]["event_value"] = when.isoformat()
            therapy_id = str(uuid.uuid4())
            coi = issue_coi(app.config["FACILITY_FIN"], first_due.year % 100, 1_000_000 + i).value
            rows.append(
                {
                    **columns,
                    "id": therapy_id,
                    "coi": coi,
                    "patient_reference": f"PT-{i:05d}",
                    "state": state,
                    "next_due_at": when,
                    "row_version": 1,
                }
            )
            dues[therapy_id] = when
        for start in range(0, len(rows), 1000):
            db.session.execute(insert(Therapy), rows[start : start + 1000])
        db.session.commit()
    return dues


def run(database_url: str, count: int, due: int, window: float, lead: float, *, engine: bool) -> dict:
    """Seed, start the scheduler, wait for the ``due`` timers and return the measurements.

    With ``engine`` each job runs the real firing path; without, the job only records when it started (the
    scheduler's own precision with ``count`` timers armed, whatever the database can take).
    """
    from server.store.models import utcnow
    from server.workflow import therapies
    from server.workflow.scheduler import TimerScheduler

    app = make_app(database_url)
    seeding = time.perf_counter()
    dues = seed(app, count, due, utcnow() + timedelta(seconds=lead), window)
    seeded_in = time.perf_counter() - seeding
    coming = sorted(dues.values())[due - 1]

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
            print(
                f"  warning: re-arming ended {(utcnow() - first_due).total_seconds():.1f} s after the first due "
                "time; raise --lead",
                flush=True,
            )
        deadline = time.monotonic() + lead + window + 900
        while len(committed) < due and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = (utcnow() - coming).total_seconds()
    finally:
        scheduler.shutdown()
        therapies.fire_due_timers = fire
    return {
        "timers": count,
        "due": due,
        "armed": armed,
        "window": window,
        "seeded_in": seeded_in,
        "rearmed_in": rearmed_in,
        "started": list(started.values()),
        "committed": list(committed.values()),
        "drained": drained,
        "engine": engine,
    }


def _lateness(values: list[float]) -> str:
    return (
        (
            f"p50 {statistics.median(values):.3f} s, p99 {percentile(values, 0.99):.3f} s, max {max(values):.3f} s "
            f"over {len(values)} timers"
        )
        if values
        else "nothing fired"
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the three passes on each backend, print their figures and return the headline ones."""
    parser = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__.split("\n")[0])
    parser.add_argument("--timers", type=int, default=10_000, help="timers armed")
    parser.add_argument("--due", type=int, default=3_000, help="of which come due during the run")
    parser.add_argument("--window", type=float, default=45.0, help="seconds over which those come due")
    parser.add_argument("--lead", type=float, default=15.0, help="seconds from seeding to the first due time")
    parser.add_argument("--burst", type=int, default=2_000, help="timers due at one moment, for the firing rate")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    options = parser.parse_args(argv if argv is not None else [])
    figures = []
    for backend in backends(options.backend):
        passes = [
            ("scheduler only", False, options.due, options.window),
            ("real firing", True, options.due, options.window),
            ("burst", True, options.burst, 0.001),
        ]
        for label, engine, due, window in passes:
            with fresh_database(backend) as url:
                result = run(url, options.timers, due, window, options.lead, engine=engine)
            values = result["committed" if engine else "started"]
            rate = due / window if window >= 1 else None
            print(
                f"{backend}, {label}: {result['timers']:,} armed, {due:,} due "
                + (f"over {window:g} s ({rate:.0f}/s)" if rate else "at one moment"),
                flush=True,
            )
            print(
                f"  seeding (bulk copy) {result['seeded_in']:.1f} s; re-arming {result['armed']:,} timers at start "
                f"{result['rearmed_in']:.2f} s",
                flush=True,
            )
            print(f"  lateness ({'committed' if engine else 'job started'}): {_lateness(values)}", flush=True)
            p99 = percentile(values, 0.99) if values else float("inf")
            complete = len(values) == due
            if label == "burst":
                firing_rate = len(values) / max(result["drained"], 1e-6)
                print(
                    f"  {len(values):,} firings committed in {result['drained']:.1f} s: {firing_rate:.0f} firings/s",
                    flush=True,
                )
                figures.append(
                    Figure(
                        f"Timers: firings one process commits, burst of {due:,}, {backend}",
                        firing_rate,
                        "firings/s",
                        note="capacity; no target",
                    )
                )
            elif engine:
                figures.append(
                    Figure(
                        f"Timers: p99 lateness, {options.timers:,} armed, {rate:.0f} due/s, {backend}",
                        p99,
                        "s",
                        "≤ 1 s",
                        complete and p99 <= TARGET_P99,
                    )
                )
            else:
                figures.append(
                    Figure(
                        f"Timers: re-arm {result['armed']:,} timers at start, {backend}",
                        result["rearmed_in"],
                        "s",
                        note="part of start-up",
                    )
                )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
