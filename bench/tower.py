"""The control tower with 10,000 active therapies: its page and its rows, first page, a phase, a search, a poll.

    python -m bench.tower [--therapies 20000] [--active 10000] [--sites 4] [--requests 200]
                          [--backend sqlite|postgresql] [--database URL]

On each database (SQLite, and PostgreSQL when one is available: run it under ``scripts/with-postgres``), a
fresh database is seeded with ``bench._seed`` (``--therapies`` therapies of the bundled autologous diagram
over ``--sites`` treatment centres, ``--active`` of them active; the copies keep the phase their template
reached through the use cases: shipment, manufacturing, infusion and follow-up; with their parties'
rows and bookings). Then a few hundred open tasks are made overdue
(``due_at`` in the past, as a fired escalation leaves them) so that the tower has late therapies to put
first; no timer is moved, so nothing fires while it is measured. ``tether serve`` (one
worker, 8 threads) is started on it and the pages are timed over HTTP from this process with one keep-alive
``requests`` session logged in to the pages, each URL ``--requests`` times after 10 warm-up requests:

- the whole page, ``/dashboard``, as the administrator (who sees every active therapy) and as the
  coordinator of ``SITE-A`` (a quarter of them);
- its rows, ``/dashboard/rows`` (what a refresh draws): the first page; a phase (``phase=manufacturing``);
  the late ones (``urgency=late``); a search by part of a COI (``q=``, a different therapy's each time);
  a search by a site's code; the second page (``cursor=``);
- the live refresh's question when nothing changed, ``/dashboard/rows?since=<version>`` (204).

Target: the page and its rows p95 <= 100 ms.
"""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

from ._common import Figure, make_app, percentile, served
from .scale import timed, web_login

TARGET_MS = 100.0
LATE_SHARE = 0.03  # of the open tasks with a due time, made overdue


def overdue(database_url: str, rng: random.Random) -> dict:
    """Make a share of the open tasks overdue; returns COIs to search for and the counts by phase."""
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from server.store.extensions import db
    from server.store.models import TaskRecord, Therapy, utcnow

    app = make_app(database_url)
    with app.app_context():
        ready = (
            db.session.execute(
                select(TaskRecord.id).where(TaskRecord.status == "ready", TaskRecord.due_at.is_not(None))
            )
            .scalars()
            .all()
        )
        late = rng.sample(list(ready), int(len(ready) * LATE_SHARE))
        now = utcnow()
        for start in range(0, len(late), 500):
            db.session.execute(
                update(TaskRecord)
                .where(TaskRecord.id.in_(late[start : start + 500]))
                .values(due_at=now - timedelta(hours=rng.uniform(1, 72)))
            )
        db.session.commit()
        cois = db.session.execute(select(Therapy.coi).where(Therapy.status == "active")).scalars().all()
        phases = dict(
            db.session.execute(
                select(Therapy.phase, func.count()).where(Therapy.status == "active").group_by(Therapy.phase)
            ).all()
        )
        db.session.remove()
        db.engine.dispose()
    return {"cois": list(cois), "late": len(late), "phases": phases}


def measure(database_url: str, backend: str, count: int, rng: random.Random) -> list[Figure]:
    """Serve the seeded database and time the tower; returns the figures."""
    import requests

    from ._seed import PASSWORD

    seeded = overdue(database_url, rng)
    print(
        f"{backend}: active therapies by phase {seeded['phases']}; {seeded['late']} open tasks made overdue",
        flush=True,
    )
    cois = seeded["cois"]
    results: dict[str, tuple[list[float], int]] = {}
    with tempfile.TemporaryDirectory(prefix="tether-bench-tower-") as folder:
        with served(database_url, workers=1, log=Path(folder) / "serve.log") as (base, _process):
            root = base.rsplit("/api/v1", 1)[0]
            admin, coordinator = requests.Session(), requests.Session()
            web_login(admin, root, "admin", PASSWORD)
            web_login(coordinator, root, "coordinator-a", PASSWORD)
            rows = f"{root}/dashboard/rows"
            results["page, admin"] = timed(admin, f"{root}/dashboard", count)
            results["page, coordinator"] = timed(coordinator, f"{root}/dashboard", count)
            results["rows, first page"] = timed(admin, rows, count)
            results["rows, phase"] = timed(admin, f"{rows}?phase=manufacturing", count)
            results["rows, late"] = timed(admin, f"{rows}?urgency=late", count)
            results["rows, search COI"] = timed(admin, "", count, urls=lambda: f"{rows}?q={rng.choice(cois)[-7:]}")
            results["rows, search site"] = timed(admin, f"{rows}?q=SITE-B", count)
            first = admin.get(rows, timeout=60)
            following = re.search(r'href="/dashboard\?cursor=([^"&]+)"', first.text)
            if following:
                results["rows, second page"] = timed(admin, f"{rows}?cursor={following.group(1)}", count)
            for _attempt in range(3):  # the version also turns with the minute: ask again if it just did
                version = admin.get(rows, timeout=60).headers["X-Tower-Version"]
                try:
                    results["poll, unchanged"] = _timed_204(admin, f"{rows}?since={version}", count)
                    break
                except RuntimeError as changed:
                    print(f"  {changed}; asking again", flush=True)
            shown = re.findall(r'data-testid="tower-total">([\d,]+) therap', first.text)
            print(f"  the admin's tower lists {shown[0] if shown else '?'} therapies", flush=True)
    figures = []
    for name, (times, size) in results.items():
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        print(
            f"  {name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(times):.1f} ms over {len(times)} requests "
            f"({size:,} bytes)",
            flush=True,
        )
        figures.append(
            Figure(
                f"{backend}: control tower {name} p95",
                p95,
                "ms",
                f"<= {TARGET_MS:g} ms",
                p95 <= TARGET_MS,
                note=f"p50 {p50:.1f} ms",
            )
        )
    return figures


def _timed_204(session, url: str, count: int) -> tuple[list[float], int]:
    """Like ``scale.timed`` for an answer of 204 (nothing changed)."""
    import time

    times = []
    for i in range(10 + count):
        began = time.perf_counter()
        answer = session.get(url, timeout=60)
        elapsed = (time.perf_counter() - began) * 1000
        if answer.status_code != 204:
            raise RuntimeError(f"GET {url} answered {answer.status_code}")
        if i >= 10:
            times.append(elapsed)
    return times, 0


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; returns its figures."""
    from ._seed import seeded_benchmark

    return seeded_benchmark(
        "python -m bench.tower",
        __doc__.split("\n")[0],
        20_000,
        argv,
        lambda url, backend, options, seconds: measure(url, backend, options.requests, random.Random(options.seed)),
    )


if __name__ == "__main__":
    import sys

    from ._common import table

    print(table(main(sys.argv[1:])))
