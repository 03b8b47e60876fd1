"""What every benchmark shares: databases to run on, a served Tether, percentiles, memory and the figures table.

A benchmark module has ``main(argv=None) -> list[Figure]``: it prints its own details as it goes and returns
its headline figures, each with its target; ``python -m bench`` collects them into one table at the end.

PostgreSQL runs need a server: ``TETHER_BENCH_POSTGRES_URL`` (or ``TETHER_TEST_POSTGRES_URL``, which
``scripts/with-postgres`` sets, as ``make bench`` does) names a database whose role may create databases;
each run gets a database of its own, dropped afterwards. Without one, the PostgreSQL figures are skipped.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-1"


@dataclass
class Figure:
    """One headline figure: what, how much, against which target, and whether it is met (None: no target)."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    before: str = ""  # the earlier measurement, when not the one BEFORE names

    def measured(self) -> str:
        if self.value is None:
            return "not measured"
        if isinstance(self.value, int):  # counts
            return f"{self.value:,} {self.unit}".strip()
        digits = 0 if abs(self.value) >= 100 else 1 if abs(self.value) >= 10 else 2 if abs(self.value) >= 1 else 3
        return f"{self.value:,.{digits}f} {self.unit}".strip()

    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: ""}[self.met]


# The earlier measurement of each figure (docs/performance.md, before the per-therapy audit chains, the lean
# completion path and the seeder's parties and bookings), shown beside the new one. Keys are figure names with
# their numbers written N (``_shape``), so that a run with other sizes still finds its row.
BEFORE = {
    "overhead: SQL statements of one task completion, sqlite": "14 (35 at first)",
    "overhead: SQL statements of one task completion, postgresql": "10 (29 at first)",
    "overhead: per-step cost, (a) SpiffWorkflow in memory": "0.119 ms",
    "overhead: per-step cost, (b) SpiffWorkflow + JSON at each wait state": "1.02 ms",
    "overhead: per-step cost, (e) Tether engine alone, no DB/HTTP": "0.890 ms",
    "overhead: per-step cost, (c) Tether over HTTP, sqlite": "13.9 ms",
    "overhead: per-step cost, (c) Tether over HTTP, postgresql": "23.3 ms",
    "overhead: c/b, sqlite": "13.6 x",
    "overhead: c/b, postgresql": "22.8 x",
    "throughput: task completions, sqlite, 1 worker": "89.6 /s (43-59 /s busy)",
    "throughput: task completions, sqlite, 2 workers": "93.4 /s (53-59 /s busy)",
    "throughput: task completions, sqlite, 4 workers": "not measured",
    "throughput: task completions, postgresql, 1 worker": "42-50 /s (busy)",
    "throughput: task completions, postgresql, 2 workers": "40.0 /s (26-56 /s busy)",
    "throughput: task completions, postgresql, 4 workers": "32-40 /s (busy)",
    "throughput: errors / lost updates": "0",
    # verification before its worker processes: one pass, measured on a quiet machine (docs/performance.md)
    "Audit verification, N entries, sqlite": "113,321 entries/s",
    "Audit verification, N entries, postgresql": "167,916 entries/s",
    "Audit verification in one pass, N entries, sqlite": "113,321 entries/s",
    "Audit verification in one pass, N entries, postgresql": "167,916 entries/s",
    "Audit verification memory growth over the one pass, sqlite": "0.1 MiB",
    "Audit verification memory growth over the one pass, postgresql": "0.7 MiB",
    "Audit seal over every chain head that moved, sqlite": "not measured",
    "Audit seal over every chain head that moved, postgresql": "not measured",
    "Audit appends, N writers, a chain each, postgresql": "390 /s (busy)",
    "Audit appends, N writers, one shared chain, postgresql": "236-310 /s (busy)",
    "Long instance: step at day N (p50 of the last N days), sqlite": "11.2 ms",
    "Long instance: step at day N (p50 of the last N days), postgresql": "15.3 ms",
    "Timers: p99 lateness, N armed, N due/s, sqlite": "0.013 s",
    "Timers: p99 lateness, N armed, N due/s, postgresql": "0.010 s",
    "Timers: firings one process commits, burst of N, sqlite": "214 firings/s",
    "Timers: firings one process commits, burst of N, postgresql": "146 firings/s",
    "Timers: re-arm N timers at start, sqlite": "0.413 s",
    "Timers: re-arm N timers at start, postgresql": "0.357 s",
    "sqlite: seeding N therapies (bulk copy)": "45.7 s (no parties, no bookings)",
    "sqlite: task inbox GET /tasks p95": "8.03 ms",
    "sqlite: therapy list GET /therapies p95": "5.74 ms (copies without party rows)",
    "sqlite: therapy detail GET /therapies/{id} p95": "5.36 ms",
    "sqlite: web task inbox /tasks p95": "44.7 ms",
    "sqlite: web control tower /dashboard p95": "101 ms",
    "sqlite: start-up with N armed timers": "1.60 s",
    "sqlite: server RSS after the run": "223 MiB",
    "postgresql: seeding N therapies (bulk copy)": "76.4 s (no parties, no bookings)",
    "postgresql: task inbox GET /tasks p95": "8.25 ms",
    "postgresql: therapy list GET /therapies p95": "5.87 ms (copies without party rows)",
    "postgresql: therapy detail GET /therapies/{id} p95": "10.1 ms",
    "postgresql: web task inbox /tasks p95": "62.2 ms",
    "postgresql: web control tower /dashboard p95": "108 ms",
    "postgresql: start-up with N armed timers": "1.68 s",
    "postgresql: server RSS after the run": "230 MiB",
}


def _shape(name: str) -> str:
    """A figure's name with its numbers written N."""
    return re.sub(r"\d[\d,.]*", "N", name)


_BEFORE_BY_SHAPE = {_shape(name): value for name, value in BEFORE.items()}


def before(figure: Figure) -> str:
    """The earlier measurement of ``figure`` (its own, else the table's), or "" when there is none."""
    return figure.before or BEFORE.get(figure.name) or _BEFORE_BY_SHAPE.get(_shape(figure.name), "")


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table (what docs/performance.md keeps): each with its earlier measurement, the one
    just made, its target and whether it is met."""
    lines = ["| Figure | Before | Now | Target | Met? |", "|---|---|---|---|---|"]
    for figure in figures:
        note = f" ({figure.note})" if figure.note else ""
        lines.append(
            f"| {figure.name}{note} | {before(figure) or '-'} | {figure.measured()} | {figure.target or '-'} | "
            f"{figure.verdict() or '-'} |"
        )
    return "\n".join(lines)


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def machine() -> str:
    """A one-line description of the machine the figures come from."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    return (
        f"{os.cpu_count()} cores ({model}){memory}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def postgres_url() -> str | None:
    """The PostgreSQL server to benchmark on, if any."""
    return os.environ.get("TETHER_BENCH_POSTGRES_URL") or os.environ.get("TETHER_TEST_POSTGRES_URL")


def backends(selected: str | None = None) -> list[str]:
    """``sqlite``, and ``postgresql`` when a server is available, or just ``selected``."""
    available = ["sqlite"] + (["postgresql"] if postgres_url() else [])
    if selected:
        if selected not in available:
            raise SystemExit(
                f"{selected} is not available (set TETHER_BENCH_POSTGRES_URL or run under scripts/with-postgres)"
            )
        return [selected]
    if "postgresql" not in available:
        print(
            "PostgreSQL figures skipped: set TETHER_BENCH_POSTGRES_URL or run under scripts/with-postgres", flush=True
        )
    return available


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """An empty database of ``backend`` for one run; yields its SQLAlchemy URL and removes it afterwards."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="tether-bench-")
        try:
            yield f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url())
    name = f"tether_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_app(database_url: str, **config):
    """A Tether app on ``database_url`` with the schema migrated (scheduler and dispatcher off)."""
    from server import create_app
    from server.cli import upgrade_database

    app = create_app(
        {"DATABASE_URL": database_url, "SCHEDULER": False, "DISPATCHER": False, "SECRET_KEY": "bench", **config}
    )
    upgrade_database(app)
    return app


def add_people(app, site: str = "SITE-A") -> dict[str, str]:
    """A site and one user per role the benchmarks use; returns an API token by role."""
    from server.access import accounts
    from server.store.extensions import db

    tokens = {}
    with app.app_context():
        accounts.add_site(site, "Bench centre", "treatment-centre", "bench")
        for role in ("coordinator", "manufacturing", "qa", "logistics", "integrator", "admin", "designer"):
            sites = [] if role in ("integrator", "admin", "designer") else [site]
            accounts.add_user(f"bench-{role}", [role], sites, f"Bench {role}", PASSWORD, actor="bench")
            tokens[role] = accounts.issue_token(f"bench-{role}", "bench", actor="bench")
        db.session.commit()
    return tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(
    database_url: str, *, workers: int = 1, threads: int = 8, env: dict | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``tether serve`` on a free port of 127.0.0.1; yields the API's base URL and the server process."""
    import requests

    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": database_url,
        "TETHER_SECRET_KEY": "bench",
        "TETHER_LOGIN_RATE_LIMIT": "100000 per minute",
        **(env or {}),
    }
    log_file = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ],
        env=environment,
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tether serve ended with {process.returncode}" + (f"; see {log}" if log else ""))
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tether serve did not answer /health within 120 s")
            time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log:
            log_file.close()


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (from /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
    return total / 1024


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
