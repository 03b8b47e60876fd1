"""Booking under contention: concurrent clients taking the places of capacity-1 slots through two servers.

    python -m bench.booking [--clients 64] [--slots 1000] [--therapies 1200] [--servers 2] [--threads 8]
                            [--options-slots 10000] [--options-bookings 5000] [--options-requests 200]
                            [--backend sqlite|postgresql]

Each backend (SQLite, and PostgreSQL when a server is configured; see bench/_common.py) gets a fresh database,
seeded through the server's own functions: a treatment centre ``SITE-A`` and a manufacturing site ``MFG-1``, a
planner of both and a coordinator of SITE-A (an API token per client), a diagram that waits for a message
(``bench.overhead``'s journey without user tasks), and ``--slots`` manufacturing slots of one place each at
MFG-1, hourly from tomorrow, opened by the planner with ``server.workflow.capacity.open_slots`` (an RFC 5545
recurrence, in runs of ``TETHER_CAPACITY_MAX_OCCURRENCES``). Starting ``--therapies`` therapies one by one
would take minutes, so one is started through ``server.workflow.therapies.start_therapy`` with MFG-1 as its
manufacturing party, and its therapy and party rows are copied in bulk (``bench._seed.Writer``) with a fresh
id, COI (from a block reserved on the counter) and patient reference each; the copies have no
``therapy.started`` audit entry, so the audit chain stays whole.

Then ``--servers`` real ``tether serve`` processes (one worker of ``--threads`` threads each) run on that one
database, and ``--clients`` threads, spread over the servers, each with its own keep-alive session and
token, book until the slots run out: a client takes the next therapy from a shared queue, picks a random slot
from the available ones it knows (``GET /slots?available=true``, read once by every client before the clock
starts), and posts ``POST /therapies/{id}/bookings``. A 201 books that therapy (the client takes the next
one); a 409 ``slot_full`` means another client was first, so the client reads the available slots again. A
client stops when no slot is left. Reported: bookings per second (wall clock, slot reads included), the
201 and 409 answers, and the latency of the booking requests (p50, p95).

Afterwards, with the servers stopped, the database is checked: no slot has more places booked than its
capacity, every slot's count of booked places equals its booked bookings, no slot holds more bookings than
places (a double booking), the bookings the clients were answered 201 for are exactly the booked ones, each
booked therapy's process data names its slot (``bookings.manufacturing``), and the audit chain verifies.

Then, on a fresh database, ``GET /schedule/options`` is timed for a therapy (``--options-requests`` requests
after 10 untimed, one at a time, through one server): ``--options-slots`` slots, a third each of apheresis and
infusion at SITE-A and manufacturing at MFG-1, hourly from tomorrow, of which ``--options-bookings`` are booked
(the earliest of each kind; the booking rows written in bulk with their slots' counts, as a therapy books one
place of each kind). The diagram declares lead times (``LEAD_TIMES``); the first chain must start at the
earliest free collection slot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from ._common import Figure, backends, fresh_database, make_app, percentile, served
from ._seed import Stencil, Writer, _reserve_cois
from .overhead import journey_diagram

PROCESS_KEY = "bench_booking"
CENTRE, MAKER = "SITE-A", "MFG-1"
PLANNER, COORDINATOR = "bench-planner", "bench-coordinator"
TEMPLATE_REFERENCE = "PT-BOOK-TEMPLATE"
RUN = 1000  # slots per open_slots call (the recurrence's COUNT)
SLOT_LENGTH = timedelta(minutes=30)  # one slot an hour
LEAD_TIMES = {"apheresisToManufacturing": "PT2H/PT48H", "manufacturingToInfusion": "P1D/P10D"}
MAX_FAILURES = 20  # unexpected answers a client takes before it gives up
WARMUP = 10  # requests not timed


def diagram() -> bytes:
    """``bench.overhead``'s journey without user tasks (it waits for a message), declaring lead times."""
    opening = f'<bpmn:process id="{PROCESS_KEY}"'
    xml = journey_diagram(0, PROCESS_KEY).decode()
    head, _, tail = xml.partition(opening)
    declared, _, rest = tail.partition(">")
    properties = "".join(f'<spiffworkflow:property name="leadTime.{k}" value="{v}"/>' for k, v in LEAD_TIMES.items())
    extension = f"<bpmn:extensionElements><spiffworkflow:properties>{properties}</spiffworkflow:properties>"
    return f"{head}{opening}{declared}>{extension}</bpmn:extensionElements>{rest}".encode()


def seed(app, database_url: str, clients: int, slots: dict[str, int], therapies: int, bookings: int = 0) -> dict:
    """Sites, people, ``slots`` (count by kind, one place each, hourly from tomorrow), ``therapies`` and
    ``bookings`` (the earliest slots of each kind in turn, a therapy booking one place of each kind); returns
    the clients' tokens, the therapies' ids (the booked ones first) and the slots' ids by kind in time order."""
    from server.access import accounts
    from server.store.extensions import db
    from server.store.models import Therapy, utcnow
    from server.workflow import capacity
    from server.workflow.definitions import deploy
    from server.workflow.therapies import start_therapy

    kinds = list(slots)
    if bookings and (therapies < -(-bookings // len(kinds)) or bookings > len(kinds) * min(slots.values())):
        raise ValueError("too few therapies or slots for the bookings")
    with app.app_context():
        sites = {
            CENTRE: accounts.add_site(CENTRE, "Bench centre", "treatment-centre", "bench"),
            MAKER: accounts.add_site(MAKER, "Bench manufacturing", "manufacturing", "bench"),
        }
        accounts.add_user(PLANNER, ["planner"], [CENTRE, MAKER], "Bench planner", None, actor="bench")
        accounts.add_user(COORDINATOR, ["coordinator"], [CENTRE], "Bench coordinator", None, actor="bench")
        tokens = [accounts.issue_token(COORDINATOR, f"client {k + 1}", actor="bench") for k in range(clients)]
        deploy(diagram(), {}, "bench")
        template = start_therapy(PROCESS_KEY, None, CENTRE, TEMPLATE_REFERENCE, {}, "bench", {"manufacturing": MAKER})
        first = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        slot_ids: dict[str, list[str]] = {}
        for kind, count in slots.items():
            site = sites[MAKER if kind == "manufacturing" else CENTRE]
            slot_ids[kind] = []
            for opened in range(0, count, RUN):
                start = first + timedelta(hours=opened)
                recurrence = f"FREQ=HOURLY;COUNT={min(RUN, count - opened)}"
                made, _ = capacity.open_slots(site, kind, start, start + SLOT_LENGTH, 1, recurrence, PLANNER)
                slot_ids[kind] += [slot.id for slot in made]
        db.session.commit()
        row = {c.key: getattr(template, c.key) for c in Therapy.__mapper__.column_attrs}
        parties = [
            {"party": p.party, "site_id": p.site_id, "assigned_at": p.assigned_at, "assigned_by": p.assigned_by}
            for p in template.party_rows
        ]
        cois = _reserve_cois(app, therapies - 1)
        writer = Writer(database_url)
        for table in ("therapy_party", "booking"):
            writer.columns[table] = [c.name for c in db.metadata.tables[table].columns]
        now = utcnow()
        db.session.remove()
        db.engine.dispose()
    copied, tables = _copies(writer, row, parties, cois, therapies - 1)
    ids = [row["id"], *copied]
    tables["booking"] = [
        {
            "id": str(uuid.uuid4()),
            "therapy_id": ids[number // len(kinds)],
            "slot_id": slot_ids[kinds[number % len(kinds)]][number // len(kinds)],
            "kind": kinds[number % len(kinds)],
            "status": "booked",
            "reason_code": None,
            "reason": None,
            "created_at": writer.out_time(writer.base_time(now)),
            "created_by": COORDINATOR,
            "ended_at": None,
            "ended_by": None,
        }
        for number in range(bookings)
    ]
    writer.open()
    try:
        writer.write(
            {name: writer.rows(name, records) for name, records in tables.items() if records},
            [("UPDATE slot SET booked = 1 WHERE id IN (SELECT slot_id FROM booking WHERE status = 'booked')", ())],
        )
    finally:
        writer.close()
    return {"tokens": tokens, "therapies": ids, "slots": slot_ids}


def _copies(
    writer: Writer, row: dict, parties: list[dict], cois: tuple[str, int, int], count: int
) -> tuple[list[str], dict[str, list[dict]]]:
    """``count`` copies of the template therapy ``row`` and its ``parties``: their ids, and their rows by table."""
    from engine.coi import issue_coi, parse_coi
    from server.store.extensions import compact_json

    def stamp(moment):
        return writer.out_time(writer.base_time(moment)) if moment else None

    tokens = {parse_coi(row["coi"]).eye_readable: "eye", row["coi"]: "coi", TEMPLATE_REFERENCE: "ref"}
    state, data = Stencil(compact_json(row["state"]), tokens), Stencil(compact_json(row["data"]), tokens)
    times = ("created_at", "updated_at", "ended_at", "next_due_at")
    fixed = {
        **row,
        "waits": compact_json(row["waits"]),
        "current_activities": compact_json(row["current_activities"]),
        **{name: stamp(row[name]) for name in times},
    }
    parties = [
        {**p, "assigned_at": stamp(p["assigned_at"]), "therapy_created_at": fixed["created_at"]} for p in parties
    ]
    fin, year, first = cois
    ids, therapy_rows, party_rows = [], [], []
    for index in range(count):
        coi = issue_coi(fin, year, first + index)
        values = {"eye": coi.eye_readable, "coi": coi.value, "ref": f"PT-BOOK-{index + 1:06d}"}
        therapy_id = str(uuid.uuid4())
        copy = {
            **fixed,
            "id": therapy_id,
            "coi": coi.value,
            "patient_reference": values["ref"],
            "state": state.fill(values),
            "data": data.fill(values),
        }
        therapy_rows.append(copy)
        party_rows.extend({**p, "therapy_id": therapy_id} for p in parties)
        ids.append(therapy_id)
    return ids, {"therapy": therapy_rows, "therapy_party": party_rows}


def session(token: str):
    """A keep-alive HTTP session that sends ``token``."""
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def available_slots(http, base: str) -> list[str]:
    """The ids of every open MFG-1 manufacturing slot with a place left, read page by page."""
    ids, cursor = [], None
    while True:
        params = {"site": MAKER, "kind": "manufacturing", "available": "true", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = http.get(f"{base}/slots", params=params)
        response.raise_for_status()
        body = response.json()
        ids.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return ids


class Booker(threading.Thread):
    """One client: its own session and token; books the shared queue's therapies into random available slots."""

    def __init__(self, number: int, base: str, token: str, slots: list[str], therapies: queue.SimpleQueue, barrier):
        super().__init__(daemon=True)
        self.base, self.therapies, self.barrier = base, therapies, barrier
        self.known = list(slots)
        self.rng = random.Random(number)
        self.http = session(token)
        self.latencies: list[float] = []
        self.answers: Counter = Counter()  # "201", "409 slot_full", ...
        self.booked: dict[str, tuple[str, str]] = {}  # booking id -> (therapy id, slot id), as answered 201
        self.reads = 0
        self.finished_at = 0.0

    def pick(self) -> str | None:
        """A random slot among those this client believes available (read again when it knows of none)."""
        if not self.known:
            self.known = available_slots(self.http, self.base)
            self.reads += 1
        return self.rng.choice(self.known) if self.known else None

    def next_therapy(self) -> str | None:
        try:
            return self.therapies.get_nowait()
        except queue.Empty:
            return None

    def run(self) -> None:
        self.http.get(f"{self.base}/health")  # connect before the clock starts
        self.barrier.wait()
        clock, failures = time.perf_counter, 0
        therapy = self.next_therapy()
        while therapy is not None and failures < MAX_FAILURES:
            slot = self.pick()
            if slot is None:
                break
            began = clock()
            try:
                response = self.http.post(f"{self.base}/therapies/{therapy}/bookings", json={"slot_id": slot})
            except Exception as exc:  # a dropped connection is an unexpected answer like any other
                self.answers[f"exception {type(exc).__name__}"] += 1
                failures += 1
                continue
            self.latencies.append(clock() - began)
            if response.status_code == 201:
                self.answers["201"] += 1
                self.booked[response.json()["id"]] = (therapy, slot)
                self.known.remove(slot)
                therapy = self.next_therapy()
                continue
            code = ""
            with contextlib.suppress(Exception):  # a non-JSON error body keeps only its status
                code = response.json()["error"]["code"]
            self.answers[f"{response.status_code} {code}".strip()] += 1
            if (response.status_code, code) == (409, "slot_full"):
                self.known = []  # another client was first: read what is left
            else:
                failures += 1
        self.finished_at = clock()


def check(app, clients: list[Booker]) -> dict:
    """Compare the slots, the bookings and the therapies' process data with what the clients were told."""
    from sqlalchemy import func, select

    from server.store import audit
    from server.store.extensions import db
    from server.store.models import Booking, Slot, Therapy

    told = {booking: pair for client in clients for booking, pair in client.booked.items()}
    with app.app_context():
        slots = {
            slot_id: (capacity, places)
            for slot_id, capacity, places in db.session.execute(select(Slot.id, Slot.capacity, Slot.booked))
        }
        held = dict(
            db.session.execute(
                select(Booking.slot_id, func.count()).where(Booking.status == "booked").group_by(Booking.slot_id)
            ).all()
        )
        booked = {
            booking_id: (therapy_id, slot_id)
            for booking_id, therapy_id, slot_id in db.session.execute(
                select(Booking.id, Booking.therapy_id, Booking.slot_id).where(Booking.status == "booked")
            )
        }
        in_process = {
            therapy_id: ((data or {}).get("bookings") or {}).get("manufacturing", {}).get("slot_id")
            for therapy_id, data in db.session.execute(select(Therapy.id, Therapy.data))
        }
        chain = audit.verify()
        db.session.rollback()
        db.engine.dispose()
    return {
        "over_capacity": sum(1 for capacity, places in slots.values() if places > capacity),
        "miscounted": sum(1 for slot_id, (_, places) in slots.items() if places != held.get(slot_id, 0)),
        "double": sum(1 for slot_id, count in held.items() if count > slots[slot_id][0]),
        "booked": len(booked),
        "told": len(told),
        "unanswered": sum(1 for booking in booked if booking not in told),
        "lost": sum(1 for booking, pair in told.items() if booked.get(booking) != pair),
        "out_of_step": sum(1 for therapy_id, slot_id in booked.values() if in_process.get(therapy_id) != slot_id),
        "left": sum(1 for capacity, places in slots.values() if places < capacity),
        "chain": chain,
    }


def run(backend: str, options) -> dict:
    """One backend: seed, serve, book until the slots run out, stop, check."""
    with fresh_database(backend) as url:
        app = make_app(url, CAPACITY_MAX_OCCURRENCES=RUN)
        began = time.perf_counter()
        seeded = seed(app, url, options.clients, {"manufacturing": options.slots}, options.therapies)
        print(
            f"  {backend}: seeded {options.slots:,} slots and {options.therapies:,} therapies in "
            f"{time.perf_counter() - began:.1f} s",
            flush=True,
        )
        logs = Path(tempfile.mkdtemp(prefix="tether-bench-booking-"))  # kept when a server fails to start
        with contextlib.ExitStack() as servers:
            bases = [
                servers.enter_context(served(url, threads=options.threads, log=logs / f"server-{n + 1}.log"))[0]
                for n in range(options.servers)
            ]
            slots = available_slots(session(seeded["tokens"][0]), bases[0])
            therapies: queue.SimpleQueue[str] = queue.SimpleQueue()
            for therapy_id in seeded["therapies"]:
                therapies.put(therapy_id)
            barrier = threading.Barrier(options.clients + 1)
            clients = [
                Booker(k, bases[k % len(bases)], token, slots, therapies, barrier)
                for k, token in enumerate(seeded["tokens"])
            ]
            for client in clients:
                client.start()
            barrier.wait()
            cpu, started = time.process_time(), time.perf_counter()
            for client in clients:
                client.join()
            elapsed = max(client.finished_at for client in clients) - started
            client_cpu = time.process_time() - cpu
        result = check(app, clients)
        shutil.rmtree(logs, ignore_errors=True)
    answers: Counter = Counter()
    for client in clients:
        answers.update(client.answers)
    latencies = [t for client in clients for t in client.latencies]
    created = answers["201"]
    result.update(
        {
            "rate": created / elapsed if elapsed > 0 else 0.0,
            "answers": answers,
            "p50": percentile(latencies, 0.5) if latencies else None,
            "p95": percentile(latencies, 0.95) if latencies else None,
            "unexpected": sum(n for answer, n in answers.items() if answer not in ("201", "409 slot_full")),
        }
    )
    print(
        f"    {created:,} bookings in {elapsed:.1f} s = {result['rate']:.0f}/s through {options.servers} servers "
        f"({options.clients} clients); answers {dict(answers)}; slot list reads "
        f"{sum(client.reads for client in clients):,}; client process CPU {client_cpu / elapsed:.0%} of one core",
        flush=True,
    )
    if latencies:
        print(
            f"    booking latency: p50 {result['p50'] * 1000:.1f} ms, p95 {result['p95'] * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms",
            flush=True,
        )
    chain = result["chain"]
    print(
        f"    after the run: slots over capacity {result['over_capacity']}, double-booked {result['double']}, "
        f"miscounted {result['miscounted']}, left with a place {result['left']}; booked bookings "
        f"{result['booked']:,} vs 201 answers {result['told']:,} (booked but never answered "
        f"{result['unanswered']}, answered but not booked {result['lost']}); process data out of step "
        f"{result['out_of_step']}; audit chain {'verifies' if chain['ok'] else 'BROKEN'} "
        f"({chain['checked']:,} entries)",
        flush=True,
    )
    return result


def measure_options(backend: str, options) -> dict:
    """``GET /schedule/options`` for a therapy with ``--options-slots`` slots (apheresis, manufacturing and
    infusion in turn) of which ``--options-bookings`` are booked (the earliest of each kind): p50 and p95."""
    kinds = ("apheresis", "manufacturing", "infusion")
    slots = {kind: options.options_slots // 3 + (i < options.options_slots % 3) for i, kind in enumerate(kinds)}
    booked_collections = -(-options.options_bookings // len(kinds))  # the first kind gets the odd ones
    with fresh_database(backend) as url:
        app = make_app(url, CAPACITY_MAX_OCCURRENCES=RUN)
        began = time.perf_counter()
        seeded = seed(app, url, 1, slots, booked_collections + 1, options.options_bookings)
        print(
            f"  {backend}: seeded {options.options_slots:,} slots with {options.options_bookings:,} booked in "
            f"{time.perf_counter() - began:.1f} s",
            flush=True,
        )
        with served(url) as (base, _):
            http = session(seeded["tokens"][0])
            ask = {"therapy_id": seeded["therapies"][-1]}  # the one therapy that books nothing
            latencies = []
            for number in range(WARMUP + options.options_requests):
                began = time.perf_counter()
                response = http.get(f"{base}/schedule/options", params=ask)
                if number >= WARMUP:
                    latencies.append(time.perf_counter() - began)
                response.raise_for_status()
    chains = response.json()["items"]
    earliest_free = seeded["slots"]["apheresis"][booked_collections]
    first_ok = bool(chains) and chains[0]["apheresis"]["id"] == earliest_free
    result = {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95), "chains": len(chains)}
    print(
        f"    GET /schedule/options (a therapy, {len(chains)} chains): p50 {result['p50'] * 1000:.1f} ms, p95 "
        f"{result['p95'] * 1000:.1f} ms over {len(latencies)} requests; the first chain starts at the earliest "
        f"free collection slot: {'yes' if first_ok else 'NO'}",
        flush=True,
    )
    return {**result, "first_ok": first_ok}


def problems(result: dict) -> int:
    """Every way the database disagrees with itself or with what the clients were told."""
    return (
        result["over_capacity"]
        + result["double"]
        + result["miscounted"]
        + result["unanswered"]
        + result["lost"]
        + result["out_of_step"]
        + abs(result["booked"] - result["told"])
        + (0 if result["chain"]["ok"] else 1)
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; print the details and return the headline figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.booking", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent client threads (default 64)")
    parser.add_argument("--slots", type=int, default=1000, help="manufacturing slots of one place (default 1000)")
    parser.add_argument(
        "--therapies", type=int, default=None, help="therapies to book for (default: 20%% more than slots)"
    )
    parser.add_argument("--servers", type=int, default=2, help="tether serve processes on the database (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads of each server's worker (default 8)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), help="only this backend")
    parser.add_argument(
        "--options-slots", type=int, default=10_000, help="slots for timing GET /schedule/options (0: skip it)"
    )
    parser.add_argument("--options-bookings", type=int, default=5_000, help="of them booked (default 5000)")
    parser.add_argument("--options-requests", type=int, default=200, help="timed requests (default 200)")
    options = parser.parse_args(argv if argv is not None else [])
    if options.therapies is None:
        options.therapies = options.slots + max(1, options.slots // 5)
    if options.therapies <= options.slots:
        parser.error("--therapies must exceed --slots, so that the slots run out first")
    print(
        f"{options.clients} clients, {options.slots:,} slots of one place, {options.servers} servers, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    figures = []
    for backend in backends(options.backend):
        result = run(backend, options)
        label = f"{backend}, {options.servers} servers, {options.clients} clients"
        bad = problems(result)
        answers = result["answers"]
        figures += [
            Figure(f"booking: bookings/s, {options.slots:,} slots of one place, {label}", result["rate"], "/s"),
            Figure(
                f"booking: double bookings and mismatches, {backend}",
                bad,
                "",
                target="0",
                met=bad == 0,
                note=f"{answers['201']:,} answered 201, {answers['409 slot_full']:,} 409 slot_full, "
                f"{result['unexpected']} other",
            ),
            Figure(
                f"booking: POST /therapies/{{id}}/bookings p95, {backend}",
                None if result["p95"] is None else result["p95"] * 1000,
                "ms",
                note=f"p50 {result['p50'] * 1000:.1f} ms" if result["p50"] is not None else "",
            ),
        ]
        if options.options_slots:
            timed = measure_options(backend, options)
            figures.append(
                Figure(
                    f"booking: GET /schedule/options p95, {options.options_slots:,} slots, "
                    f"{options.options_bookings:,} booked, {backend}",
                    timed["p95"] * 1000,
                    "ms",
                    note=f"p50 {timed['p50'] * 1000:.1f} ms; {timed['chains']} chains"
                    + ("" if timed["first_ok"] else "; NOT the earliest free"),
                )
            )
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
