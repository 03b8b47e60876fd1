"""Scale: the API and pages over HTTP with 100,000 therapies in the database, 10,000 of them active.

    python -m bench.scale [--therapies 100000] [--active 10000] [--requests 200] [--backend sqlite|postgresql]
                          [--database URL]

On each database (SQLite, and PostgreSQL when one is available: run it under ``scripts/with-postgres``), a
fresh database is seeded with ``bench._seed`` (100,000 therapies of the bundled autologous diagram over four
treatment centres, 10,000 active with open tasks and armed timers; timed), then ``tether serve`` (one worker,
8 threads) is started on it and measured over HTTP from this process with one keep-alive ``requests``
session, each endpoint ``--requests`` times after 10 warm-up requests, one request at a time:

- the task inbox, ``GET /api/v1/tasks`` (default page) as the coordinator of ``SITE-A``;
- the therapy list, ``GET /api/v1/therapies`` (default page) as the same coordinator;
- a therapy's detail, ``GET /api/v1/therapies/{id}`` of a random active therapy of ``SITE-A``;
- as the manufacturing user of ``MFG-1`` (who sees only its party's tasks and therapies): its task inbox and
  its therapy list;
- the capacity calendar (``GET /api/v1/slots`` of MFG-1's manufacturing runs over the next 4 weeks), a centre's
  free apheresis slots (``available=true``), a random active therapy's bookings and its booking options
  (``GET /api/v1/schedule/options?therapy_id=``);
- the web pages' task inbox (``/tasks``) and control tower (``/dashboard``) as that coordinator, logged in, and
  the capacity calendar (``/capacity``, MFG-1's week) as MFG-1's planner.

Also: the start-up time with the 10,000 timers in the database (from launching ``tether serve`` to
``/api/v1/health`` answering 200: a gunicorn worker loads the app, starts the scheduler and re-arms every
timer from the database before it takes its first request; the server's log line ``re-armed N timers`` is
checked when the log has it), and the resident memory of the server's process tree (gunicorn's master and
its worker) once every request has been answered.

Targets: inbox and list p95 <= 50 ms (the party-filtered ones, the slot lists and the options too), detail
p95 <= 30 ms (a therapy's bookings too), server RSS <= 300 MB, start-up <= 5 s.

``--database URL`` runs on an existing database instead of a fresh one (seeded first when it is empty), e.g.
one seeded once with ``python -m bench._seed``, so that the measurement can be repeated without seeding.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from pathlib import Path

from ._common import Figure, make_app, percentile, rss_mib, served

TARGET_LIST_MS = 50.0
TARGET_DETAIL_MS = 30.0
TARGET_RSS_MIB = 300.0
TARGET_STARTUP_S = 5.0
TARGET_SEED_S = 60.0
WARM_UP = 10
COORDINATOR = "coordinator-a"
SITE = "SITE-A"
MANUFACTURER, PLANNER = "manufacturing", "planner"  # users at MFG-1: they see its party's tasks and therapies


def callers(database_url: str) -> dict:
    """Fresh API tokens for the coordinator of SITE-A and an admin, SITE-A's active therapies, the armed timers."""
    from sqlalchemy import func, select

    from server.access import accounts
    from server.store.extensions import db
    from server.store.models import Site, Therapy

    app = make_app(database_url)
    with app.app_context():
        tokens = {
            name: accounts.issue_token(name, "bench.scale", actor="bench")
            for name in (COORDINATOR, "admin", MANUFACTURER, PLANNER)
        }
        db.session.commit()
        site = db.session.execute(select(Site.id).where(Site.code == SITE)).scalar_one()
        active = (
            db.session.execute(
                select(Therapy.id).where(Therapy.status == "active", Therapy.site_id == site).order_by(Therapy.id)
            )
            .scalars()
            .all()
        )
        timers = db.session.execute(
            select(func.count())
            .select_from(Therapy)
            .where(Therapy.status == "active", Therapy.next_due_at.is_not(None))
        ).scalar_one()
        therapies = db.session.execute(select(func.count()).select_from(Therapy)).scalar_one()
        db.session.remove()
        db.engine.dispose()
    return {"tokens": tokens, "active": active, "timers": timers, "therapies": therapies}


def timed(session, url: str, count: int, *, headers: dict | None = None, urls=None) -> tuple[list[float], int]:
    """Milliseconds of ``count`` GETs (after the warm-up), and the size of the last body."""
    times: list[float] = []
    size = 0
    for i in range(WARM_UP + count):
        target = urls() if urls else url
        began = time.perf_counter()
        response = session.get(target, headers=headers, timeout=60)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {target} answered {response.status_code}: {response.text[:300]}")
        size = len(response.content)
        if i >= WARM_UP:
            times.append(elapsed)
    return times, size


def web_login(session, root: str, username: str, password: str) -> None:
    """Log in to the pages (CSRF token from the form)."""
    form = session.get(f"{root}/login", timeout=30).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', form
    )
    answer = session.post(
        f"{root}/login",
        data={"csrf_token": token.group(1) if token else "", "username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code not in (302, 303):
        raise RuntimeError(f"web login answered {answer.status_code}")


def measure(
    database_url: str, backend: str, requests_count: int, seed_seconds: float | None, rng: random.Random
) -> list[Figure]:
    """Serve the seeded database and measure it; returns the figures."""
    import requests

    from ._seed import PASSWORD

    people = callers(database_url)
    figures: list[Figure] = []
    if seed_seconds is not None:
        figures.append(
            Figure(
                f"{backend}: seeding {people['therapies']:,} therapies (bulk copy)",
                seed_seconds,
                "s",
                f"<= {TARGET_SEED_S:g} s" if backend == "sqlite" else "",
                seed_seconds <= TARGET_SEED_S if backend == "sqlite" else None,
            )
        )
    with tempfile.TemporaryDirectory(prefix="tether-bench-scale-") as folder:
        log = Path(folder) / "serve.log"
        launched = time.perf_counter()
        with served(database_url, workers=1, log=log) as (base, process):
            started_in = time.perf_counter() - launched
            root = base.rsplit("/api/v1", 1)[0]
            session = requests.Session()
            coordinator = {"Authorization": f"Bearer {people['tokens'][COORDINATOR]}"}
            results = {}
            results["inbox"] = timed(session, f"{base}/tasks", requests_count, headers=coordinator)
            results["list"] = timed(session, f"{base}/therapies", requests_count, headers=coordinator)
            active = people["active"]
            results["detail"] = timed(
                session, "", requests_count, headers=coordinator, urls=lambda: f"{base}/therapies/{rng.choice(active)}"
            )
            maker = {"Authorization": f"Bearer {people['tokens'][MANUFACTURER]}"}
            results["party inbox"] = timed(session, f"{base}/tasks", requests_count, headers=maker)
            results["party list"] = timed(session, f"{base}/therapies", requests_count, headers=maker)
            today = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
            weeks = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 28 * 86400))
            results["calendar"] = timed(
                session,
                f"{base}/slots?site=MFG-1&kind=manufacturing&from={today}&to={weeks}",
                requests_count,
                headers=maker,
            )
            results["free slots"] = timed(
                session, f"{base}/slots?site={SITE}&kind=apheresis&available=true", requests_count, headers=coordinator
            )
            results["bookings"] = timed(
                session,
                "",
                requests_count,
                headers=coordinator,
                urls=lambda: f"{base}/therapies/{rng.choice(active)}/bookings",
            )
            results["options"] = timed(
                session,
                "",
                requests_count,
                headers=coordinator,
                urls=lambda: f"{base}/schedule/options?therapy_id={rng.choice(active)}",
            )
            pages = requests.Session()
            web_login(pages, root, COORDINATOR, PASSWORD)
            results["web inbox"] = timed(pages, f"{root}/tasks", requests_count)
            results["control tower"] = timed(pages, f"{root}/dashboard", requests_count)
            planner = requests.Session()
            web_login(planner, root, PLANNER, PASSWORD)
            results["web calendar"] = timed(planner, f"{root}/capacity?site=MFG-1", requests_count)
            memory = rss_mib(process.pid)
        armed = re.findall(r"re-armed (\d+) timers", log.read_text(errors="replace"))
    print(
        f"{backend}: {people['therapies']:,} therapies, {people['timers']:,} armed timers in the database, "
        f"{len(active):,} active at {SITE}; server log: "
        + (f"re-armed {', '.join(armed)} timers" if armed else "no re-arming line (INFO not logged)"),
        flush=True,
    )
    if armed and int(armed[-1]) != people["timers"]:
        raise RuntimeError(f"the server re-armed {armed[-1]} timers, the database has {people['timers']}")
    names = {
        "inbox": "task inbox GET /tasks",
        "list": "therapy list GET /therapies",
        "detail": "therapy detail GET /therapies/{id}",
        "party inbox": "MFG-1's task inbox GET /tasks (its party's tasks)",
        "party list": "MFG-1's therapy list GET /therapies (its party's therapies)",
        "calendar": "capacity calendar GET /slots (MFG-1, 4 weeks)",
        "free slots": "free slots GET /slots?available=true (a centre's apheresis)",
        "bookings": "a therapy's bookings GET /therapies/{id}/bookings",
        "options": "booking options GET /schedule/options?therapy_id=",
        "web inbox": "web task inbox /tasks",
        "control tower": "web control tower /dashboard",
        "web calendar": "web capacity calendar /capacity (MFG-1's week)",
    }
    targets = {
        "inbox": TARGET_LIST_MS,
        "list": TARGET_LIST_MS,
        "detail": TARGET_DETAIL_MS,
        "party inbox": TARGET_LIST_MS,
        "party list": TARGET_LIST_MS,
        "calendar": TARGET_LIST_MS,
        "free slots": TARGET_LIST_MS,
        "bookings": TARGET_DETAIL_MS,
        "options": TARGET_LIST_MS,
    }
    for key, (times, size) in results.items():
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        print(
            f"  {names[key]}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(times):.1f} ms over {len(times)} "
            f"requests ({size:,} bytes)",
            flush=True,
        )
        target = targets.get(key)
        figures.append(
            Figure(
                f"{backend}: {names[key]} p95",
                p95,
                "ms",
                f"<= {target:g} ms" if target else "",
                p95 <= target if target else None,
                note=f"p50 {p50:.1f} ms",
            )
        )
    print(f"  start-up with {people['timers']:,} timers: {started_in:.2f} s; server RSS {memory:.0f} MiB", flush=True)
    figures.append(
        Figure(
            f"{backend}: start-up with {people['timers']:,} armed timers",
            started_in,
            "s",
            f"<= {TARGET_STARTUP_S:g} s",
            started_in <= TARGET_STARTUP_S,
        )
    )
    figures.append(
        Figure(
            f"{backend}: server RSS after the run", memory, "MiB", f"<= {TARGET_RSS_MIB:g} MB", memory <= TARGET_RSS_MIB
        )
    )
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; returns its figures."""
    from ._seed import seeded_benchmark

    return seeded_benchmark(
        "python -m bench.scale",
        __doc__.split("\n")[0],
        100_000,
        argv,
        lambda url, backend, options, seconds: measure(
            url, backend, options.requests, seconds, random.Random(options.seed)
        ),
    )


if __name__ == "__main__":
    import sys

    from ._common import table

    print(table(main(sys.argv[1:])))
