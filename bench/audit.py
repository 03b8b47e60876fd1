"""Audit chain verification speed over a long chain, and whether memory stays flat as it grows.

    python -m bench.audit [--entries 1000000] [--backend sqlite|postgresql]

Fills a fresh database with ``--entries`` chained audit entries shaped like the ones therapies write
(task completions with their form data, timer firings, custody transfers, user changes), each hashed by
``server.store.audit.entry_hash`` exactly as ``append`` hashes, written in bulk (executemany on SQLite, COPY on
PostgreSQL). Then times ``server.store.audit.verify`` (what ``GET /api/v1/audit/verify`` and ``tether audit
verify`` run) over the whole chain, sampling the process's resident memory at every progress report.

Figures: entries verified per second (target >= 200,000/s) and the memory growth from a tenth of the way
to the end (flat: a few MiB, whatever the length; the first batches warm the driver's and the allocator's
buffers once).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ._common import Figure, backends, fresh_database, make_app

TARGET_RATE = 200_000  # entries per second
FLAT_MIB = 32  # growth from the first progress report to the end that still counts as flat


def _payload(rng: random.Random, seq: int) -> tuple[str, str, str, dict, str | None]:
    """action, actor, subject type, data and reason of a plausible entry."""
    kind = seq % 10
    if kind < 5:
        return (
            "task.completed",
            f"coordinator-{seq % 7}",
            "task",
            {
                "task_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "activity": "Task_ConfirmCollection",
                "form": {
                    "collected_at": "2026-11-23T08:15:00Z",
                    "volume_ml": round(rng.uniform(80, 260), 1),
                    "bag_id": f"BAG-{seq:07d}",
                    "operator": "Ana Müller",
                    "notes": "no deviation",
                },
            },
            None,
        )
    if kind < 7:
        return (
            "timer.fired",
            "scheduler",
            "therapy",
            {"activity": "Timer_FollowUp", "due_at": "2026-12-21T00:00Z"},
            None,
        )
    if kind < 9:
        return (
            "custody.transferred",
            "courier-api",
            "therapy",
            {"from": "SITE-A", "to": "MFG-1", "temperature_c": round(rng.uniform(2, 8), 2), "seal": "intact"},
            None,
        )
    return (
        "user.updated",
        "admin",
        "user",
        {"roles": {"old": ["coordinator"], "new": ["coordinator", "qa"]}},
        "training record 2026-114 completed",
    )


def entries(count: int, seed: int = 7):
    """``count`` chained entries as column tuples (``at`` a datetime, ``data`` its stored text).

    Each hash is SHA-256 over the entry's stored form (``server.store.audit.stored_form``, which the unit
    tests hold equal to the canonical form ``append`` hashes); every thousandth entry is also hashed the slow
    way, through ``entry_hash``, and the two must agree.
    """
    import hashlib

    from server.store import audit

    rng = random.Random(seed)
    prev = audit.GENESIS
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    therapies = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(1, count // 40))]
    for seq in range(1, count + 1):
        action, actor, subject_type, data, reason = _payload(rng, seq)
        therapy = therapies[seq % len(therapies)] if subject_type != "user" else None
        at = start + timedelta(seconds=seq * 2.5, microseconds=rng.randrange(1_000_000))
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        row = [
            seq,
            audit._timestamp(at),
            actor,
            action,
            subject_type,
            therapy or str(seq % 50),
            therapy,
            1 if therapy else None,
            reason,
            text,
            prev,
            None,
        ]
        row[11] = hashlib.sha256(audit.stored_form(tuple(row)).encode()).hexdigest()
        if seq % 1000 == 1:
            fields = dict(zip(audit.COLUMNS, row, strict=True))
            fields.update(at=at, data=json.loads(text))
            assert audit.entry_hash(fields) == row[11], f"stored form and canonical form differ at {seq}"
        prev = row[11]
        row[1] = at
        yield tuple(row)


def seed(app, count: int, progress) -> None:
    """Write ``count`` entries and move the chain head to the last one."""
    from server.store import audit
    from server.store.extensions import db

    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            last_hash, written = None, 0
            postgres = db.engine.dialect.name == "postgresql"
            mark = "%s" if postgres else "?"
            if postgres:
                with cursor.copy(f"COPY audit_entry ({', '.join(audit.COLUMNS)}) FROM STDIN") as copy:
                    for row in entries(count):
                        copy.write_row(row)
                        written += 1
                        last_hash = row[-1]
                        if written % 100_000 == 0:
                            progress(written)
            else:
                cursor.execute("BEGIN")  # the app's SQLite connections leave transactions to the caller
                places = ", ".join("?" * len(audit.COLUMNS))
                statement = f"INSERT INTO audit_entry ({', '.join(audit.COLUMNS)}) VALUES ({places})"
                batch = []
                for row in entries(count):
                    batch.append((*row[:1], row[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[2:]))
                    if len(batch) == 50_000:
                        cursor.executemany(statement, batch)
                        written += len(batch)
                        progress(written)
                        last_hash, batch = row[-1], []
                if batch:
                    cursor.executemany(statement, batch)
                    last_hash = batch[-1][-1]
            cursor.execute(f"UPDATE audit_head SET seq = {mark}, hash = {mark} WHERE id = 1", (count, last_hash))
            if cursor.rowcount == 0:
                cursor.execute(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, {mark}, {mark})", (count, last_hash))
            connection.commit()
        finally:
            connection.close()


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(backend: str, count: int) -> dict:
    from server.store import audit

    with fresh_database(backend) as url:
        app = make_app(url)
        began = time.perf_counter()
        seed(
            app,
            count,
            lambda n: print(f"  seeded {n:,} entries ({n / (time.perf_counter() - began):,.0f}/s)", flush=True),
        )
        seeded_in = time.perf_counter() - began
        samples: list[tuple[int, float]] = []
        with app.app_context():
            began = time.perf_counter()
            result = audit.verify(progress=lambda n: samples.append((n, _rss_mib())))
            took = time.perf_counter() - began
    if not result["ok"] or result["checked"] != count:
        raise RuntimeError(f"the seeded chain did not verify: {result}")
    first, last = samples[len(samples) // 10], samples[-1]  # after the first tenth: caches and buffers are warm
    return {
        "backend": backend,
        "count": count,
        "seeded_in": seeded_in,
        "took": took,
        "rate": count / took,
        "rss_first": first,
        "rss_last": last,
        "growth": last[1] - first[1],
    }


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    options = parser.parse_args(argv if argv is not None else [])
    figures = []
    for backend in backends(options.backend):
        print(f"{backend}: {options.entries:,} entries", flush=True)
        result = run(backend, options.entries)
        print(
            f"  seeding took {result['seeded_in']:.1f} s; verification of {result['count']:,} entries took "
            f"{result['took']:.2f} s: {result['rate']:,.0f} entries/s",
            flush=True,
        )
        print(
            f"  resident memory {result['rss_first'][1]:.0f} MiB after {result['rss_first'][0]:,} entries, "
            f"{result['rss_last'][1]:.0f} MiB after {result['rss_last'][0]:,}: growth {result['growth']:+.1f} MiB",
            flush=True,
        )
        figures.append(
            Figure(
                f"Audit verification, {result['count']:,} entries, {backend}",
                result["rate"],
                "entries/s",
                f"≥ {TARGET_RATE:,}/s",
                result["rate"] >= TARGET_RATE,
            )
        )
        figures.append(
            Figure(
                f"Audit verification memory growth over the run, {backend}",
                result["growth"],
                "MiB",
                f"flat (≤ {FLAT_MIB} MiB)",
                result["growth"] <= FLAT_MIB,
            )
        )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
