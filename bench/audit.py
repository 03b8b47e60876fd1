"""Audit trail: verification speed over a long trail, whether its memory stays flat, and append throughput.

    python -m bench.audit [--entries 1000000] [--backend sqlite|postgresql] [--workers 0] [--writers 16] [--seconds 5]

Fills a fresh database with ``--entries`` chained audit entries shaped like the ones therapies write
(task completions with their form data, timer firings, custody transfers, user changes), in one chain per
therapy (about 40 entries each) and the system chain, each hashed by ``server.store.audit.entry_hash`` exactly
as ``append`` hashes, written in bulk (executemany on SQLite, COPY on PostgreSQL), and seals them (timed: a
seal over every chain's head, all moved since there was no seal before, about 25,000 at 1,000,000 entries).
Then times
``server.store.audit.verify`` (what ``GET /api/v1/audit/verify`` and ``tether audit verify`` run) over the whole
trail twice: as configured (``--workers``, as ``TETHER_AUDIT_VERIFY_WORKERS``: 0 one worker process per CPU, each
over a range of the trail), then in one pass in the verifying process (``TETHER_AUDIT_VERIFY_WORKERS=1``, what
every verification did before the workers), sampling that pass's resident memory at every progress report.

Append throughput (PostgreSQL only: SQLite has one writer whatever the chains): ``--writers`` threads append one
entry per transaction through ``audit.append`` for ``--seconds``, once each into a therapy of its own, once all
into the one system chain (what every append did before chains: one head row for the whole trail).

Figures: entries verified per second as configured (target >= 200,000/s) and in one pass, the memory growth of
the one pass from a tenth of the way to the end (flat: a few MiB, whatever the length; the first batches warm the
driver's and the allocator's buffers once), the seal's time over that many moved heads, and appends per second on
distinct chains and on one chain.
"""

from __future__ import annotations

import argparse
import json
import os
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
    chains: dict[str, tuple[int, str]] = {}  # chain -> (place, hash) of its last entry
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    therapies = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(1, count // 40))]
    for seq in range(1, count + 1):
        action, actor, subject_type, data, reason = _payload(rng, seq)
        therapy = therapies[seq % len(therapies)] if subject_type != "user" else None
        at = start + timedelta(seconds=seq * 2.5, microseconds=rng.randrange(1_000_000))
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        chain = therapy or audit.SYSTEM
        place, prev = chains.get(chain, (0, audit.GENESIS))
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
            chain,
            place + 1,
        ]
        row[11] = hashlib.sha256(audit.stored_form(tuple(row)).encode()).hexdigest()
        if seq % 1000 == 1:
            fields = dict(zip(audit.COLUMNS, row, strict=True))
            fields.update(at=at, data=json.loads(text))
            assert audit.entry_hash(fields) == row[11], f"stored form and canonical form differ at {seq}"
        chains[chain] = (place + 1, row[11])
        row[1] = at
        yield tuple(row)


def seed(app, count: int, progress) -> tuple[float, int]:
    """Write ``count`` entries, the heads of their chains, and seal them; returns the seal's seconds and the heads
    it covered (every chain's: all moved since there was no seal)."""
    from server.store import audit
    from server.store.extensions import db

    heads: dict[str, tuple[int, int, str]] = {}  # chain -> (place, seq, hash) of its last entry

    def rows():
        for row in entries(count):
            heads[row[12]] = (row[13], row[0], row[11])
            yield row

    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            written = 0
            postgres = db.engine.dialect.name == "postgresql"
            if postgres:
                with cursor.copy(f"COPY audit_entry ({', '.join(audit.COLUMNS)}) FROM STDIN") as copy:
                    for row in rows():
                        copy.write_row(row)
                        written += 1
                        if written % 100_000 == 0:
                            progress(written)
                with cursor.copy("COPY audit_chain_head (chain, chain_seq, seq, hash, sealed_seq) FROM STDIN") as copy:
                    for chain, (place, seq, digest) in heads.items():
                        copy.write_row((chain, place, seq, digest, 0))
                cursor.execute("SELECT setval('audit_entry_seq', %s)", (count,))
            else:
                cursor.execute("BEGIN")  # the app's SQLite connections leave transactions to the caller
                places = ", ".join("?" * len(audit.COLUMNS))
                statement = f"INSERT INTO audit_entry ({', '.join(audit.COLUMNS)}) VALUES ({places})"
                batch = []
                for row in rows():
                    batch.append((*row[:1], row[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[2:]))
                    if len(batch) == 50_000:
                        cursor.executemany(statement, batch)
                        written += len(batch)
                        progress(written)
                        batch = []
                if batch:
                    cursor.executemany(statement, batch)
                cursor.executemany(
                    "INSERT INTO audit_chain_head (chain, chain_seq, seq, hash, sealed_seq) VALUES (?, ?, ?, ?, 0)",
                    [(chain, *head) for chain, head in heads.items()],
                )
            connection.commit()
        finally:
            connection.close()
        began = time.perf_counter()
        sealed = audit.seal()
        took = time.perf_counter() - began
    if sealed is None:
        raise RuntimeError("the seeded chains were not sealed")
    return took, sealed["heads"]


def append_rate(app, writers: int, seconds: float, *, shared: bool) -> float:
    """Appends per second of ``writers`` threads, one entry per transaction, into a chain of their own each
    (a therapy apiece) or all into the system chain (``shared``)."""
    import threading

    from server.store import audit
    from server.store.uow import unit_of_work

    counts = [0] * writers
    errors: list[BaseException] = []
    go, stop = threading.Barrier(writers + 1), threading.Event()

    def writer(number: int) -> None:
        therapy = None if shared else str(uuid.uuid4())
        try:
            with app.app_context():
                go.wait()
                while not stop.is_set():
                    with unit_of_work():
                        audit.append(f"writer-{number}", "bench.appended", "therapy", str(number), therapy_id=therapy)
                    counts[number] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    go.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"an append failed: {errors[0]!r}")
    return sum(counts) / took


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(backend: str, count: int, writers: int = 16, seconds: float = 5.0, workers: int = 0) -> dict:
    from sqlalchemy import text

    from server.store import audit
    from server.store.extensions import db

    with fresh_database(backend) as url:
        pool = {"pool_size": writers + 2} if backend == "postgresql" else {}
        app = make_app(url, SQLALCHEMY_ENGINE_OPTIONS=pool, AUDIT_VERIFY_WORKERS=workers)
        began = time.perf_counter()
        seal_seconds, sealed_heads = seed(
            app,
            count,
            lambda n: print(f"  seeded {n:,} entries ({n / (time.perf_counter() - began):,.0f}/s)", flush=True),
        )
        seeded_in = time.perf_counter() - began
        fresh_took = vacuum_took = None
        if backend == "postgresql":
            # Right after COPY wrote them, PostgreSQL's first reads of the rows also set each one's visibility
            # hints (a write per page); a trail written entry by entry over weeks has long been vacuumed. The
            # trail is verified once as loaded, then vacuumed (as autovacuum does after a load) and verified as
            # it stands in service.
            with app.app_context():
                began = time.perf_counter()
                fresh = audit.verify()
                fresh_took = time.perf_counter() - began
                if not fresh["ok"]:
                    raise RuntimeError(f"the seeded chain did not verify right after the load: {fresh}")
                began = time.perf_counter()
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    connection.execute(text("VACUUM (ANALYZE) audit_entry, audit_chain_head"))
                vacuum_took = time.perf_counter() - began
            print(
                f"  right after the load: verified in {fresh_took:.2f} s ({count / fresh_took:,.0f} entries/s); "
                f"VACUUM (ANALYZE) took {vacuum_took:.1f} s",
                flush=True,
            )
        with app.app_context():
            began = time.perf_counter()
            result = audit.verify()
            took = time.perf_counter() - began
        samples: list[tuple[int, float]] = []
        app.config["AUDIT_VERIFY_WORKERS"] = 1
        with app.app_context():
            began = time.perf_counter()
            one_pass = audit.verify(progress=lambda n: samples.append((n, _rss_mib())))
            one_pass_took = time.perf_counter() - began
        app.config["AUDIT_VERIFY_WORKERS"] = workers
        appends = {}
        if backend == "postgresql":
            for shared in (False, True):
                appends[shared] = append_rate(app, writers, seconds, shared=shared)
                print(
                    f"  {writers} writers, {'one chain' if shared else 'a chain each'}: "
                    f"{appends[shared]:,.0f} appends/s",
                    flush=True,
                )
            with app.app_context():
                after = audit.verify()
            if not after["ok"]:
                raise RuntimeError(f"the trail did not verify after the appends: {after}")
    if not result["ok"] or result["checked"] != count:
        raise RuntimeError(f"the seeded chain did not verify: {result}")
    if one_pass != result:
        raise RuntimeError(f"one pass and the workers disagree: {one_pass} and {result}")
    first, last = samples[len(samples) // 10], samples[-1]  # after the first tenth: caches and buffers are warm
    return {
        "backend": backend,
        "count": count,
        "seeded_in": seeded_in,
        "took": took,
        "rate": count / took,
        "one_pass_took": one_pass_took,
        "one_pass_rate": count / one_pass_took,
        "workers": workers or os.cpu_count() or 1,
        "rss_first": first,
        "rss_last": last,
        "growth": last[1] - first[1],
        "appends": appends,
        "writers": writers,
        "seal_seconds": seal_seconds,
        "sealed_heads": sealed_heads,
        "fresh_took": fresh_took,
        "vacuum_took": vacuum_took,
    }


def _split(workers: int) -> str:
    return "one pass" if workers < 2 else f"split over {workers} worker processes"


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--workers", type=int, default=0, help="verification's worker processes (0: one per CPU; 1: one pass)"
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv if argv is not None else [])
    figures = []
    for backend in backends(options.backend):
        print(f"{backend}: {options.entries:,} entries", flush=True)
        result = run(backend, options.entries, options.writers, options.seconds, options.workers)
        print(
            f"  a seal over the {result['sealed_heads']:,} chain heads that moved took {result['seal_seconds']:.2f} s",
            flush=True,
        )
        print(
            f"  seeding took {result['seeded_in']:.1f} s; verification of {result['count']:,} entries took "
            f"{result['took']:.2f} s ({_split(result['workers'])}): {result['rate']:,.0f} entries/s; in one pass "
            f"{result['one_pass_took']:.2f} s: {result['one_pass_rate']:,.0f} entries/s",
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
                note=_split(result["workers"])
                + ("; the trail vacuumed after its load" if result["fresh_took"] else ""),
            )
        )
        if result["fresh_took"]:
            figures.append(
                Figure(
                    f"Audit verification right after the bulk load, {result['count']:,} entries, {backend}",
                    result["count"] / result["fresh_took"],
                    "entries/s",
                    note=f"{_split(result['workers'])}; the first reads set every row's visibility hints",
                )
            )
            figures.append(Figure(f"VACUUM (ANALYZE) of the loaded trail, {backend}", result["vacuum_took"], "s"))
        figures.append(
            Figure(
                f"Audit verification in one pass, {result['count']:,} entries, {backend}",
                result["one_pass_rate"],
                "entries/s",
                note="TETHER_AUDIT_VERIFY_WORKERS=1",
            )
        )
        figures.append(
            Figure(
                f"Audit verification memory growth over the one pass, {backend}",
                result["growth"],
                "MiB",
                f"flat (≤ {FLAT_MIB} MiB)",
                result["growth"] <= FLAT_MIB,
            )
        )
        figures.append(
            Figure(
                f"Audit seal over every chain head that moved, {backend}",
                result["seal_seconds"],
                "s",
                note=f"{result['sealed_heads']:,} therapy heads",
            )
        )
        for shared, rate in result["appends"].items():
            figures.append(
                Figure(
                    f"Audit appends, {result['writers']} writers, {'one shared chain' if shared else 'a chain each'}, "
                    f"{backend}",
                    rate,
                    "appends/s",
                )
            )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
