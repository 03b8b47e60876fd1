"""Long-running instances: a diagram that loops 1,000 times (a daily check for three years) must not slow down.

    python -m bench.long_instances [--days 1000] [--backend sqlite|postgresql] [--without-compaction DAYS]

The daily-check diagram (tests/fixtures/daily-check-loop.bpmn) loops once a day: a user task with a late
reminder (a non-interrupting boundary timer whose branch ends on its own), a script, a parallel split and
join, an embedded subprocess, an exclusive gateway and a one-day timer. Every tenth day the check is late
and the reminder fires. One therapy runs ``--days`` days through Tether's use cases with full persistence
(engine state, task rows, audit chain, outbox; one transaction per step) on a fake clock: each day is a
task completion and a timer firing. Steps are timed per hundred days: p50 and max of the step, the saved
state's size and the task count the state holds.

For comparison the same loop runs in the engine alone (JSON save and restore at every step) without
compaction for ``--without-compaction`` days: there the tree keeps every task ever run and each step gets
slower; once the tree is deep enough, SpiffWorkflow's recursive ancestry walk fails (RecursionError).

Target: a step takes <= 20 ms at day 1,000 (p50 of the last hundred days) and the loop never stalls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ._common import ROOT, Figure, backends, fresh_database, make_app

TARGET_MS = 20.0
FIXTURES = ROOT / "tests" / "fixtures"
DIAGRAM = FIXTURES / "daily-check-loop.bpmn"
FORM = "daily-check.schema.json"


def _run_server(database_url: str, days: int, report) -> dict:
    from engine.clock import FakeClock
    from server.access import accounts
    from server.store import audit
    from server.store.extensions import db
    from server.store.models import TaskRecord, Therapy
    from server.workflow import therapies
    from server.workflow.definitions import deploy

    clock = FakeClock()
    app = make_app(database_url, CLOCK=clock)
    steps: list[tuple[int, float]] = []
    with app.app_context():
        deploy(DIAGRAM.read_bytes(), {FORM: (FIXTURES / FORM).read_bytes()}, "bench")
        accounts.add_site("SITE-A", "Bench centre", "treatment-centre", "bench")
        therapy = therapies.start_therapy(
            "daily_check", None, "SITE-A", "PT-LOOP", {"day": 0, "days": days, "summaries": 0}, "bench"
        )
        therapy_id = therapy.id
        for day in range(1, days + 1):
            if day % 10 == 0:
                clock.advance(hours=7)
                therapies.fire_due_timers(therapy_id)
            task = db.session.query(TaskRecord).filter_by(therapy_id=therapy_id, status="ready").one()
            began = time.perf_counter()
            therapies.complete_task(task, {"well": True, "temperature_c": 36.8}, "bench-coordinator")
            steps.append((day, time.perf_counter() - began))
            if day < days:
                clock.advance(hours=25)
                began = time.perf_counter()
                therapies.fire_due_timers(therapy_id)
                steps.append((day, time.perf_counter() - began))
            db.session.expire_all()
            if day % 100 == 0 or day == days:
                therapy = db.session.get(Therapy, therapy_id)
                recent = [s for d, s in steps if d > day - 100]
                report(day, recent, len(json.dumps(therapy.state)), len(therapy.state["tasks"]))
        therapy = db.session.get(Therapy, therapy_id)
        compactions = db.session.execute(
            db.text("SELECT count(*) FROM audit_entry WHERE action = 'history.compacted'")
        ).scalar_one()
        completed = db.session.execute(
            db.text("SELECT count(*) FROM audit_entry WHERE action = 'task.completed' AND therapy_id = :t"),
            {"t": therapy_id},
        ).scalar_one()
        verified = audit.verify()
        return {
            "status": therapy.status,
            "day": therapy.data.get("day"),
            "steps": steps,
            "compactions": compactions,
            "completions_audited": completed,
            "audit_ok": verified["ok"],
        }


def _run_engine_uncompacted(days: int, report) -> dict:
    """The same loop in the engine alone, without compaction, until it ends or fails."""
    from engine.clock import FakeClock
    from engine.definition import load_definition, parse_form
    from engine.errors import EngineError
    from engine.runtime import Runtime

    forms = {FORM: parse_form(FORM, (FIXTURES / FORM).read_bytes())}
    clock = FakeClock()
    runtime = Runtime(load_definition(DIAGRAM.read_bytes(), forms, set()), clock=clock, compact_above=None)
    outcome = runtime.start({"day": 0, "days": days, "summaries": 0})
    steps: list[tuple[int, float]] = []
    try:
        for day in range(1, days + 1):
            if day % 10 == 0:
                clock.advance(hours=7)
                outcome = runtime.fire_timers(json.loads(json.dumps(outcome.state)))
            began = time.perf_counter()
            outcome = runtime.complete_task(
                json.loads(json.dumps(outcome.state)), outcome.ready_tasks[0].task_id, {"well": True}
            )
            steps.append((day, time.perf_counter() - began))
            if day < days:
                clock.advance(hours=25)
                began = time.perf_counter()
                outcome = runtime.fire_timers(json.loads(json.dumps(outcome.state)))
                steps.append((day, time.perf_counter() - began))
            if day % 25 == 0:
                report(
                    day,
                    [s for d, s in steps if d > day - 25],
                    len(json.dumps(outcome.state)),
                    len(outcome.state["tasks"]),
                )
    except (EngineError, RecursionError) as exc:
        return {"failed_at": len(steps) // 2 + 1, "error": f"{type(exc).__name__}: {exc}"[:160], "steps": steps}
    return {"failed_at": None, "steps": steps}


def _line(day: int, recent: list[float], size: int, tasks: int) -> None:
    print(
        f"  day {day:>5}: step p50 {statistics.median(recent) * 1000:6.1f} ms, max {max(recent) * 1000:6.1f} ms; "
        f"state {size / 1024:7.1f} KiB, {tasks} tasks",
        flush=True,
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(prog="python -m bench.long_instances", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--without-compaction",
        type=int,
        default=75,
        metavar="DAYS",
        help="days to run the engine alone without compaction, for comparison (0: skip)",
    )
    options = parser.parse_args(argv if argv is not None else [])
    figures = []
    if options.without_compaction:
        print(f"engine alone, no compaction, {options.without_compaction} days:", flush=True)
        plain = _run_engine_uncompacted(options.without_compaction, _line)
        if plain["failed_at"]:
            print(f"  stalled on day {plain['failed_at']}: {plain['error']}", flush=True)
    for backend in backends(options.backend):
        print(f"{backend}: {options.days} days through the use cases, with compaction", flush=True)
        with fresh_database(backend) as url:
            began = time.perf_counter()
            result = _run_server(url, options.days, _line)
            took = time.perf_counter() - began
        last = [s for d, s in result["steps"] if d > options.days - 100]
        p50 = statistics.median(last) * 1000
        print(
            f"  {result['status']} after day {result['day']} in {took:.0f} s; {result['compactions']} compactions "
            f"audited; {result['completions_audited']} task completions audited; audit chain "
            f"{'intact' if result['audit_ok'] else 'BROKEN'}",
            flush=True,
        )
        finished = (
            result["status"] == "completed"
            and result["day"] == options.days
            and result["audit_ok"]
            and result["completions_audited"] == options.days
        )
        figures.append(
            Figure(
                f"Long instance: step at day {options.days} (p50 of the last 100 days), {backend}",
                p50,
                "ms",
                f"≤ {TARGET_MS:g} ms",
                p50 <= TARGET_MS,
            )
        )
        figures.append(
            Figure(
                f"Long instance: {options.days} days run to the end, {backend}",
                options.days,
                "days",
                "never stalls",
                finished,
            )
        )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
