"""Bulk seeding: a migrated database filled with therapies of the bundled autologous CAR-T diagram.

    python -m bench._seed --database URL [--therapies 100000] [--active 10000] [--sites 4] [--seed 1]

Fills an empty database (migrated here if it is not yet) with ``--therapies`` therapies of
``processes/autologous-car-t.bpmn`` spread evenly over ``--sites`` treatment centres (``SITE-A``, ``SITE-B``,
...), ``--active`` of them active and the rest completed, plus one user per role and an API token each
(printed at the end). Every therapy has the parties its process names: its treatment centre (which also
collects, the apheresis party), the manufacturing site ``MFG-1`` and the courier ``LOG-1``, each with its
party row, and each task is at its party's site. Every therapy holds the places its scheduling task booked
through the process (``slot.book``): a collection slot at its centre and a manufacturing run at ``MFG-1``, one
place each, named in its process data (``bookings``); besides them, each centre and ``MFG-1`` publish open
capacity from today for 8 weeks (apheresis, infusion, manufacturing). Most active therapies wait on an armed
timer (a boundary or catch timer due between 6 hours and 28 days from now, so nothing fires while a benchmark
runs) and most have an open user task.

Starting 100,000 therapies one by one through the use cases would take an hour, so this does what
``bench.timers`` does: a handful of template therapies are started and advanced through the real use cases
(``server.workflow.therapies``: engine, task rows, signatures, audit, outbox), one per stage the copies need (waiting
for the fresh-material courier, manufacturing in progress, the bedside check, the infusion, the day-28
timer, and completed). Their rows are then copied in bulk INSERTs: the therapy row with its engine state,
its party rows, its booked slots and bookings (new slots at the copy's times), its task rows, its
signatures (with their content hash computed again for the copy, so they stay valid)
and one ``therapy.started`` audit entry per copy, appended to the hash chain (``tether audit verify`` stays
green). Each copy gets a fresh id, fresh task ids (in the engine state too, so its open tasks can be
completed), a COI from a block reserved on the facility's counter, its own patient reference and site,
timestamps moved back to when it started (up to two years ago), and for active ones a new due time (in the
state, ``waits``, ``next_due_at`` and the task's ``due_at``). The copies' JSON is written from the
templates' serialized text (compact, as the server writes it) with those values put in place, so copying
costs a string join per row. Rows go straight to the driver in batches of 1,000 therapies, built by a
thread while the previous batch is written: ``executemany`` on SQLite (journal off while seeding, WAL again
afterwards), ``COPY`` on PostgreSQL; the secondary indexes of the tables written are dropped first and built
again at the end (faster than updating them row by row). Progress (rows/s) is printed every 10,000.

On PostgreSQL the tables are analysed at the end (as autovacuum would do after a bulk load); SQLite is left
as Tether leaves it (no ``ANALYZE``). A seed that fails half-way leaves a database to throw away.
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select, update
from sqlalchemy import text as sa_text

ROOT = Path(__file__).resolve().parent.parent
PROCESS_KEY = "autologous_car_t"
PASSWORD = "bench-password-1"
TEMPLATE_SITE = "SITE-A"
# Steps of the happy path each template has taken (server.demo_data.AUTOLOGOUS_HAPPY_PATH), with the share of
# the active copies made from it. Most of these stages wait on a timer; after 5 steps the therapy waits for the
# manufacturing site's receipt of the material (MFG-1's task), after 15 and 16 for a coordinator's task (the
# bedside check, the infusion).
ACTIVE_STAGES = {4: 0.15, 5: 0.10, 7: 0.15, 15: 0.25, 16: 0.25, 17: 0.10}
COMPLETED_STEPS = 19  # the whole journey, follow-up included
BATCH = 1000  # therapies per INSERT batch
SIGNING_IN = ("coordinator-a", "qa", "admin", "planner")  # users given a password (the others use their API token)
MIN_DUE, MAX_DUE = timedelta(hours=6), timedelta(days=28)
MANUFACTURING_SITE, LOGISTICS_SITE = "MFG-1", "LOG-1"
# The sites of every therapy's parties besides its treatment centre (which also collects: apheresis).
PARTY_SITES = {"manufacturing": MANUFACTURING_SITE, "logistics": LOGISTICS_SITE}
# Open capacity from today on, beside the booked places: (kind, at a treatment centre or MFG-1, start and end
# hour UTC, places), one slot a day for FREE_DAYS days.
FREE_CAPACITY = [("apheresis", None, 8, 12, 1), ("infusion", None, 9, 17, 2), ("manufacturing", "MFG-1", 8, 18, 2)]
FREE_DAYS = 56


class Stencil:
    """A JSON text cut at every occurrence of some tokens; ``fill`` joins the pieces with each token's new value."""

    def __init__(self, source: str, slots: dict[str, str]):
        self.source = source
        wanted = sorted(slots, key=len, reverse=True)  # the longest first: "COI C" before "COI"
        self.parts, keys, position = [], [], 0
        for match in re.finditer("|".join(map(re.escape, wanted)), source):
            self.parts.append(source[position : match.start()])
            keys.append(slots[match.group(0)])
            position = match.end()
        self.last = source[position:]
        self.values = (
            operator.itemgetter(*keys) if len(keys) > 1 else ((lambda values: (values[keys[0]],)) if keys else None)
        )

    def fill(self, values: dict[str, str]) -> str:
        if self.values is None:
            return self.source
        return "".join(
            itertools.chain(
                itertools.chain.from_iterable(zip(self.parts, self.values(values), strict=True)), (self.last,)
            )
        )


class Template:
    """One therapy advanced through the use cases, and how to make copies of its rows quickly."""

    def __init__(
        self,
        steps: int,
        therapy: dict,
        tasks: list[dict],
        signatures: list[dict],
        started_entry: dict | None,
        writer: Writer,
        bookings: list[tuple[dict, dict]] = (),  # type: ignore[assignment]
    ):
        from engine.coi import parse_coi
        from server.clock import iso
        from server.store.extensions import compact_json

        self.steps, self.therapy, self.tasks, self.signatures = steps, therapy, tasks, signatures
        self.started_entry = started_entry
        self.active = therapy["status"] == "active"
        due = therapy["next_due_at"]
        # token of the template -> slot; a copy gives each slot its own value
        slots = {
            parse_coi(therapy["coi"]).eye_readable: "eye",
            therapy["coi"]: "coi",
            therapy["patient_reference"]: "ref",
            TEMPLATE_SITE: "site",
        }
        slots.update({task["id"]: f"t{i}" for i, task in enumerate(tasks)})
        if due is not None:
            slots.update({due.isoformat(): "due", iso(due): "due_z"})
        # the booked slots: their ids and times (as the process data names them) differ for each copy
        for i, (_booking, slot) in enumerate(bookings):
            slots[slot["id"]] = f"s{i}"
            for end in ("start", "end"):
                moment = slot[f"{end}_at"]
                moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                slots.update({iso(moment): f"s{i}_{end}", moment.isoformat(): f"s{i}_{end}_x"})
        # JSON as the server writes it (compact); an audit entry's data with sorted keys, as the chain hashes it
        self.state = Stencil(compact_json(therapy["state"]), slots)
        self.data = Stencil(compact_json(therapy["data"]), slots)
        self.waits = Stencil(compact_json(therapy["waits"]), slots)
        self.current_activities = compact_json(therapy["current_activities"])
        self.started_data = (
            Stencil(compact_json(started_entry["data"], sort_keys=True), slots) if started_entry else None
        )
        # times as the writer takes them, moved by each copy's shift
        at = writer.base_time
        self.created_at, self.updated_at = at(therapy["created_at"]), at(therapy["updated_at"])
        self.ended_at = at(therapy["ended_at"]) if therapy["ended_at"] else None
        # task rows in the writer's column order, with what changes per copy
        columns = writer.columns["task"]
        self.task_columns = {
            name: columns.index(name)
            for name in ("id", "therapy_id", "site_id", "data", "created_at", "completed_at", "due_at")
        }
        self.task_rows = []
        self.at_centre = [task["site_id"] == therapy["site_id"] for task in tasks]  # else at another party's site
        self.bookings = [
            (booking, slot, at(booking["created_at"]), at(slot["start_at"]), at(slot["end_at"]), at(slot["created_at"]))
            for booking, slot in bookings
        ]
        self.centre_slots = [slot["site_id"] == therapy["site_id"] for _booking, slot in bookings]
        for task in tasks:
            row = [task[c] for c in columns]
            times = {name: at(task[name]) if task[name] else None for name in ("created_at", "completed_at", "due_at")}
            self.task_rows.append(
                (
                    row,
                    Stencil(compact_json(task["data"]), slots),
                    times,
                    task["due_at"] is not None and task["due_at"] == due,
                )
            )
        self.signed = [
            (
                signature,
                next(i for i, t in enumerate(tasks) if t["id"] == signature["task_id"]),
                at(signature["signed_at"]),
            )
            for signature in signatures
        ]


@dataclass
class Seeded:
    """What was seeded: tokens by user name, the active therapies' ids, and how long it took."""

    database_url: str
    therapies: int
    active: int
    sites: list[str]
    tokens: dict[str, str]
    active_ids: list[str]
    rows: int
    seconds: float
    templates_seconds: float


def site_codes(count: int) -> list[str]:
    """``SITE-A``, ``SITE-B``, ... (``count`` of them)."""
    letters = string.ascii_uppercase
    return [f"SITE-{letters[i]}" if i < 26 else f"SITE-{letters[i // 26 - 1]}{letters[i % 26]}" for i in range(count)]


def users(sites: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(user name, roles, sites): a coordinator per site, and one user of every other role."""
    return [(f"coordinator-{code[5:].lower()}", ["coordinator"], [code]) for code in sites] + [
        ("manufacturing", ["manufacturing"], [MANUFACTURING_SITE]),
        ("planner", ["planner"], [MANUFACTURING_SITE]),
        ("logistics", ["logistics"], [LOGISTICS_SITE]),
        ("qa", ["qa"], []),
        ("integrator", ["integrator"], []),
        ("admin", ["admin"], []),
        ("auditor", ["auditor"], []),
    ]


def _people(sites: list[str]) -> dict[str, str]:
    from server.access import accounts
    from server.store.extensions import db

    for code in sites:
        accounts.add_site(code, f"Treatment centre {code[5:]}", "treatment-centre", "bench")
    accounts.add_site(MANUFACTURING_SITE, "Manufacturing site 1", "manufacturing", "bench")
    accounts.add_site(LOGISTICS_SITE, "Courier 1", "logistics", "bench")
    tokens = {}
    for username, roles, scoped in users(sites):  # a password (slow to hash) only for who signs or logs in
        password = PASSWORD if username in SIGNING_IN else None
        accounts.add_user(username, roles, scoped, f"Bench {username}", password, actor="bench")
        tokens[username] = accounts.issue_token(username, "bench", actor="bench")
    db.session.commit()
    return tokens


def _advance(app, steps: int, number: int) -> str:
    """Start one therapy at the template site and take ``steps`` steps of the happy path; returns its id."""
    from engine.clock import FakeClock
    from server.demo_data import AUTOLOGOUS_HAPPY_PATH, form_data
    from server.store.extensions import db
    from server.store.models import TaskRecord, Therapy, User, utcnow
    from server.workflow import therapies

    clock = FakeClock(utcnow())
    original = app.config.get("CLOCK")
    app.config["CLOCK"] = clock
    by_role = {
        "coordinator": f"coordinator-{TEMPLATE_SITE[5:].lower()}",
        "manufacturing": "manufacturing",
        "qa": "qa",
        "logistics": "logistics",
    }
    try:
        therapy = therapies.start_therapy(
            PROCESS_KEY, None, TEMPLATE_SITE, f"PT-TEMPLATE-{number:02d}", {}, "bench", PARTY_SITES
        )
        for step in AUTOLOGOUS_HAPPY_PATH[:steps]:
            clock.advance(hours=2)
            therapy = db.session.get(Therapy, therapy.id)
            if step[0] == "task":
                task = db.session.execute(
                    select(TaskRecord).where(
                        TaskRecord.therapy_id == therapy.id,
                        TaskRecord.status == "ready",
                        TaskRecord.activity_id == step[1],
                    )
                ).scalar_one()
                user = db.session.execute(select(User).where(User.username == by_role[task.role])).scalar_one()
                data = (
                    _template_slots(clock(), number)
                    if task.activity_id == "Task_Scheduling"
                    else form_data(task.form, therapy.coi)
                )
                therapies.complete_task(task, data, user.username, signer=user if task.signature else None)
            elif step[0] == "message":
                therapies.deliver_message(therapy, step[1], step[2], actor="integrator")
            else:
                clock.advance(**step[1])
                therapies.fire_due_timers(therapy.id, actor="scheduler")
        return therapy.id
    finally:
        app.config["CLOCK"] = original


def _template_slots(now, number: int) -> dict:
    """An apheresis slot at the template's centre from about a day on and a manufacturing slot at MFG-1 the day
    after, one place each, for the scheduling task to book (their times at odd minutes and seconds, so that no
    other time of the therapy's JSON reads the same)."""
    from server.store.extensions import db
    from server.store.models import Site, Slot

    sites = {
        code: db.session.execute(select(Site.id).where(Site.code == code)).scalar_one()
        for code in (TEMPLATE_SITE, MANUFACTURING_SITE)
    }
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    apheresis_start = day + timedelta(hours=8, minutes=number, seconds=7)
    manufacturing_start = day + timedelta(days=1, hours=8, minutes=number, seconds=11)

    def one_place(site: str, kind: str, start: datetime, hours: int) -> Slot:
        return Slot(
            site_id=sites[site],
            kind=kind,
            start_at=start,
            end_at=start + timedelta(hours=hours),
            capacity=1,
            booked=0,
            status="open",
            created_at=now,
            created_by="bench",
        )

    slots = {
        "apheresis_slot_id": one_place(TEMPLATE_SITE, "apheresis", apheresis_start, 4),
        "manufacturing_slot_id": one_place(MANUFACTURING_SITE, "manufacturing", manufacturing_start, 10),
    }
    db.session.add_all(slots.values())
    db.session.commit()
    return {name: slot.id for name, slot in slots.items()}


def _template(therapy_id: str, steps: int, writer: Writer) -> Template:
    from server.store.extensions import db
    from server.store.models import AuditEntry, Booking, Signature, Slot, TaskRecord, Therapy

    def columns(model, row) -> dict:
        return {c.key: getattr(row, c.key) for c in model.__mapper__.column_attrs}

    therapy = db.session.get(Therapy, therapy_id)
    tasks = (
        db.session.execute(
            select(TaskRecord).where(TaskRecord.therapy_id == therapy_id).order_by(TaskRecord.created_at)
        )
        .scalars()
        .all()
    )
    signatures = db.session.execute(select(Signature).where(Signature.therapy_id == therapy_id)).scalars().all()
    started = (
        db.session.execute(
            select(AuditEntry).where(AuditEntry.therapy_id == therapy_id, AuditEntry.action == "therapy.started")
        )
        .scalars()
        .first()
    )
    booked = db.session.execute(
        select(Booking, Slot).join(Slot, Slot.id == Booking.slot_id).where(Booking.therapy_id == therapy_id)
    ).all()
    return Template(
        steps,
        columns(Therapy, therapy),
        [columns(TaskRecord, t) for t in tasks],
        [columns(Signature, s) for s in signatures],
        columns(AuditEntry, started) if started else None,
        writer,
        [(columns(Booking, b), columns(Slot, slot)) for b, slot in booked],
    )


def _reserve_cois(app, count: int) -> tuple[str, int, int]:
    """Take ``count`` numbers from this year's COI counter at once; returns (facility, year, first number)."""
    from server.store.extensions import db
    from server.store.models import CoiCounter, utcnow

    fin, year = app.config["FACILITY_FIN"], utcnow().year % 100
    counter = db.session.get(CoiCounter, (fin, year))
    first = counter.next_number + 1
    db.session.execute(
        update(CoiCounter)
        .where(CoiCounter.fin == fin, CoiCounter.year == year)
        .values(next_number=CoiCounter.next_number + count)
    )
    db.session.commit()
    return fin, year, first


class Writer:
    """Bulk inserts straight through the driver: ``executemany`` on SQLite (no journal while it runs), ``COPY`` on
    PostgreSQL. Rows are lists in column order; JSON columns take serialized text, timestamps what ``out_time``
    makes of a ``base_time``."""

    def __init__(self, database_url: str):
        from sqlalchemy.engine import make_url

        from server.store.extensions import db

        self.database_url = database_url
        self.dialect = make_url(database_url).get_backend_name()
        self.columns = {
            name: [c.name for c in db.metadata.tables[name].columns]
            for name in (
                "therapy",
                "task",
                "signature",
                "audit_entry",
                "audit_chain_head",
                "therapy_party",
                "slot",
                "booking",
            )
        }
        self.indexes: list[str] = []

    def base_time(self, moment):
        """A timestamp in the form the copies shift: naive UTC on SQLite (as stored there), aware elsewhere."""
        return moment.astimezone(UTC).replace(tzinfo=None) if self.dialect == "sqlite" else moment

    def out_time(self, moment):
        """A shifted ``base_time`` as the driver takes it (the text ``UtcDateTime`` stores on SQLite)."""
        return moment.isoformat(" ", "microseconds") if self.dialect == "sqlite" else moment

    def open(self) -> None:
        """Connect (once nothing else holds the database) and drop the secondary indexes until ``close``."""
        self.engine = create_engine(self.database_url)
        self.connection = self.engine.raw_connection()
        self.driver = self.connection.driver_connection
        if self.dialect == "sqlite":
            self.driver.isolation_level = None
            for pragma in ("busy_timeout=30000", "journal_mode=OFF", "synchronous=OFF", "cache_size=-262144"):
                self.driver.execute(f"PRAGMA {pragma}")
        self.indexes = self._drop_indexes()

    def _drop_indexes(self) -> list[str]:
        """Drop the secondary indexes of the tables written (``close`` builds them again: faster than keeping
        them up to date row by row); the unique ones stay."""
        names = tuple(self.columns)
        if self.dialect == "sqlite":
            marks = ", ".join("?" * len(names))
            rows = self.driver.execute(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({marks})",
                names,
            ).fetchall()
        else:
            with self.driver.cursor() as cursor:
                cursor.execute(
                    "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
                    "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                    "WHERE c.conname = i.indexname)",
                    (list(names),),
                )
                rows = cursor.fetchall()
        for name, _ in rows:
            self.driver.execute(f'DROP INDEX "{name}"')
        if self.dialect != "sqlite":
            self.driver.commit()
        return [sql for _, sql in rows]

    def rows(self, name: str, records: list[dict]) -> list[list]:
        """Records (dicts by column) as rows in column order."""
        columns = self.columns[name]
        return [[record[c] for c in columns] for record in records]

    def write(self, batch: dict[str, list[list]], sql: list[tuple[str, tuple]] = ()) -> None:
        """Insert every table's prepared rows and run ``sql`` (statement, parameters) in one transaction."""
        if self.dialect == "sqlite":
            self.driver.execute("BEGIN")
            for name, rows in batch.items():
                columns = self.columns[name]
                statement = f'INSERT INTO "{name}" ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})'
                self.driver.executemany(statement, rows)
            for statement, parameters in sql:
                self.driver.execute(statement.replace("%s", "?"), parameters)
            self.driver.execute("COMMIT")
            return
        with self.driver.cursor() as cursor:
            for name, rows in batch.items():
                columns = self.columns[name]
                with cursor.copy(f'COPY "{name}" ({", ".join(columns)}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)
            for statement, parameters in sql:
                cursor.execute(statement, parameters)
        self.driver.commit()

    def close(self) -> None:
        for sql in self.indexes:
            self.driver.execute(sql)
        self.indexes = []
        if self.dialect == "sqlite":
            self.driver.execute("PRAGMA journal_mode=WAL")
        else:
            self.driver.commit()
            self.driver.autocommit = True
            self.driver.execute("ANALYZE")
        self.connection.close()
        self.engine.dispose()


def seed(
    database_url: str,
    therapies: int = 100_000,
    active: int = 10_000,
    sites: int = 4,
    *,
    app=None,
    random_seed: int = 1,
    echo: Callable[[str], None] = print,
) -> Seeded:
    """Fill the empty database at ``database_url`` (migrated here when needed); see the module's text."""
    from engine.coi import issue_coi
    from server.clock import iso
    from server.compliance import signatures
    from server.store import audit
    from server.store.extensions import db
    from server.store.models import Site, utcnow
    from server.workflow.definitions import deploy_bundled

    if active > therapies:
        raise ValueError("--active cannot exceed --therapies")
    began = time.perf_counter()
    if app is None:
        from ._common import make_app

        app = make_app(database_url)
    rng = random.Random(random_seed)
    bits = rng.getrandbits

    def new_id() -> str:  # a random (version 4) UUID, faster than uuid.uuid4() and repeatable with the seed
        h = f"{bits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    codes = site_codes(sites)
    writer = Writer(database_url)
    with app.app_context():
        if db.session.execute(select(Site.id).limit(1)).first() is not None:
            raise SystemExit(f"{database_url} already holds data; seed an empty (migrated) database")
        deploy_bundled(ROOT / "processes", "bench")
        tokens = _people(codes)
        templates = [
            _template(_advance(app, steps, number), steps, writer)
            for number, steps in enumerate([*ACTIVE_STAGES, COMPLETED_STEPS], start=1)
        ]
        templates_seconds = time.perf_counter() - began
        copies = therapies - len(templates)
        actives = active - sum(1 for t in templates if t.active)
        if copies < 0 or actives < 0 or actives > copies:
            raise ValueError(f"seeding needs at least {len(templates)} therapies, {len(ACTIVE_STAGES)} of them active")
        sizes = [len(t.state.source) / 1024 for t in templates]
        echo(
            f"templates: {len(templates)} therapies through the use cases in {templates_seconds:.1f} s "
            f"(engine state {min(sizes):.0f} to {max(sizes):.0f} KiB)"
        )
        site_ids = {s.code: s.id for s in db.session.execute(select(Site)).scalars()}
        fin, year, first_number = _reserve_cois(app, copies)
        seq = db.session.execute(sa_text("SELECT coalesce(max(seq), 0) FROM audit_entry")).scalar_one()
        active_ids = [t.therapy["id"] for t in templates if t.active]
        db.session.commit()
        db.session.remove()
        db.engine.dispose()

    by_steps = {t.steps: t for t in templates}
    stage_pool = [by_steps[steps] for steps, share in ACTIVE_STAGES.items() for _ in range(round(share * 100))]
    kinds = [True] * actives + [False] * (copies - actives)
    rng.shuffle(kinds)
    now_aware = utcnow()
    now = writer.base_time(now_aware)
    out = writer.out_time
    columns = writer.columns
    party_site_ids = {party: site_ids[code] for party, code in PARTY_SITES.items()}

    def free_capacity() -> list[list]:
        """Open slots from today on at every treatment centre and MFG-1, none of their places booked."""
        today = now_aware.replace(hour=0, minute=0, second=0, microsecond=0)
        rows = []
        for day in range(FREE_DAYS):
            for kind, where, first, last, places in FREE_CAPACITY:
                for code in [where] if where else codes:
                    start = today + timedelta(days=day, hours=first)
                    slot = {
                        "id": new_id(),
                        "site_id": site_ids[code],
                        "kind": kind,
                        "start_at": out(writer.base_time(start)),
                        "end_at": out(writer.base_time(start + timedelta(hours=last - first))),
                        "capacity": places,
                        "booked": 0,
                        "status": "open",
                        "created_at": out(now),
                        "created_by": "bench",
                    }
                    rows.append([slot[c] for c in columns["slot"]])
        return rows

    def batches():
        """Batches of rows to insert, built while the previous batch is being written."""
        nonlocal seq
        for start in range(0, copies, BATCH):
            therapy_rows, task_rows, signature_rows, audit_rows, head_rows, ids = [], [], [], [], [], []
            party_rows, booking_rows = [], []
            slot_rows = free_capacity() if start == 0 else []
            for index in range(start, min(start + BATCH, copies)):
                is_active = kinds[index]
                template = rng.choice(stage_pool) if is_active else by_steps[COMPLETED_STEPS]
                base = template.therapy
                site = codes[index % len(codes)]
                site_id = site_ids[site]
                coi = issue_coi(fin, year, first_number + index)
                therapy_id = new_id()
                reference = f"PT-{site[5:]}-{index + 1:06d}"
                created = now - timedelta(days=rng.uniform(2, 60) if is_active else rng.uniform(45, 730))
                shift = created - template.created_at
                task_ids = [new_id() for _ in template.task_rows]
                values = {"eye": coi.eye_readable, "coi": coi.value, "ref": reference, "site": site}
                values.update((f"t{i}", task_id) for i, task_id in enumerate(task_ids))
                booked = []
                for i, (booking, slot, booked_at, slot_start, slot_end, slot_made) in enumerate(template.bookings):
                    slot_id = new_id()
                    values[f"s{i}"] = slot_id
                    for end, moment in (("start", slot_start + shift), ("end", slot_end + shift)):
                        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                        values[f"s{i}_{end}"], values[f"s{i}_{end}_x"] = iso(aware), aware.isoformat()
                    slot_row = {
                        **slot,
                        "id": slot_id,
                        "site_id": site_id if template.centre_slots[i] else slot["site_id"],
                        "start_at": out(slot_start + shift),
                        "end_at": out(slot_end + shift),
                        "booked": 1,
                        "created_at": out(slot_made + shift),
                    }
                    booked.append(
                        {
                            **booking,
                            "id": new_id(),
                            "therapy_id": therapy_id,
                            "slot_id": slot_id,
                            "created_at": out(booked_at + shift),
                        }
                    )
                    slot_rows.append([slot_row[c] for c in columns["slot"]])
                due = None
                if base["next_due_at"] is not None:
                    offset = MIN_DUE + (MAX_DUE - MIN_DUE) * rng.random()
                    due = now + offset
                    values["due"], values["due_z"] = (now_aware + offset).isoformat(), iso(now_aware + offset)
                therapy = {
                    **base,
                    "id": therapy_id,
                    "site_id": site_id,
                    "coi": coi.value,
                    "patient_reference": reference,
                    "state": template.state.fill(values),
                    "data": template.data.fill(values),
                    "waits": template.waits.fill(values),
                    "current_activities": template.current_activities,
                    "next_due_at": out(due) if due else None,
                    "row_version": 1,
                    "created_at": out(created),
                    "updated_at": out(template.updated_at + shift),
                    "ended_at": out(template.ended_at + shift) if template.ended_at else None,
                }
                therapy_rows.append([therapy[c] for c in columns["therapy"]])
                booking_rows.extend([record[c] for c in columns["booking"]] for record in booked)
                for party, party_site in (("treatment", site_id), *party_site_ids.items()):
                    record = {
                        "therapy_id": therapy_id,
                        "party": party,
                        "site_id": party_site,
                        "therapy_created_at": out(created),
                        "assigned_at": out(created),
                        "assigned_by": "bench",
                    }
                    party_rows.append([record[c] for c in columns["therapy_party"]])
                if is_active:
                    ids.append(therapy_id)
                slot = template.task_columns
                task_data = []
                for task_id, at_centre, (row, data, times, due_task) in zip(
                    task_ids, template.at_centre, template.task_rows, strict=True
                ):
                    row = row[:]
                    row[slot["id"]], row[slot["therapy_id"]] = task_id, therapy_id
                    if at_centre:  # a task of another party stays at that party's site (MFG-1, LOG-1)
                        row[slot["site_id"]] = site_id
                    row[slot["data"]] = filled = data.fill(values)
                    task_data.append(filled)
                    row[slot["created_at"]] = out(times["created_at"] + shift)
                    if times["completed_at"]:
                        row[slot["completed_at"]] = out(times["completed_at"] + shift)
                    if times["due_at"]:
                        row[slot["due_at"]] = out(due if due_task else times["due_at"] + shift)
                    task_rows.append(row)
                for signature, task_index, signed_at in template.signed:
                    task = template.tasks[task_index]
                    content = signatures.content_hash(
                        task_id=task_ids[task_index],
                        therapy_id=therapy_id,
                        coi=coi.value,
                        activity_id=task["activity_id"],
                        data=json.loads(task_data[task_index]),
                        meaning=signature["meaning"],
                        signer=signature["signer_username"],
                        printed_name=signature["printed_name"],
                        signed_at=signed_at + shift,
                    )
                    record = {
                        **signature,
                        "id": new_id(),
                        "therapy_id": therapy_id,
                        "task_id": task_ids[task_index],
                        "signed_at": out(signed_at + shift),
                        "content_hash": content,
                    }
                    signature_rows.append([record[c] for c in columns["signature"]])
                if template.started_entry is not None:  # one entry per copy, the first of the therapy's chain
                    seq += 1
                    data = template.started_data.fill(values)
                    entry = {
                        **template.started_entry,
                        "seq": seq,
                        "at": created,
                        "subject_id": therapy_id,
                        "therapy_id": therapy_id,
                        "site_id": site_id,
                        "data": json.loads(data),
                        "prev_hash": audit.GENESIS,
                        "chain": therapy_id,
                        "chain_seq": 1,
                    }
                    entry["hash"] = audit.entry_hash(entry)
                    entry.update(data=data, at=out(created))
                    audit_rows.append([entry[c] for c in columns["audit_entry"]])
                    head = {"chain": therapy_id, "chain_seq": 1, "seq": seq, "hash": entry["hash"], "sealed_seq": 0}
                    head_rows.append([head[c] for c in columns["audit_chain_head"]])
            tables = {
                "therapy": therapy_rows,
                "therapy_party": party_rows,
                "slot": slot_rows,
                "booking": booking_rows,
                "task": task_rows,
                "signature": signature_rows,
                "audit_entry": audit_rows,
                "audit_chain_head": head_rows,
            }
            yield (
                {name: rows for name, rows in tables.items() if rows},
                [("SELECT setval('audit_entry_seq', %s)", (seq,))] if writer.dialect == "postgresql" else [],
                len(therapy_rows),
                ids,
            )

    written = writing = 0.0
    done = 0
    writer.open()
    from server.store.audit_scan import read_ahead

    copying = time.perf_counter()
    try:
        for prepared, sql, count, ids in read_ahead(batches(), depth=2, name="seed-builder"):
            began_writing = time.perf_counter()
            writer.write(prepared, sql)
            writing += time.perf_counter() - began_writing
            written += sum(len(rows) for rows in prepared.values()) + len(sql)
            done += count
            active_ids.extend(ids)
            if done == copies or (done // BATCH) % 10 == 0:
                elapsed = time.perf_counter() - copying
                echo(
                    f"  copied {done:,}/{copies:,} therapies: {written:,.0f} rows in {elapsed:.1f} s "
                    f"({written / elapsed:,.0f} rows/s, {done / elapsed:,.0f} therapies/s; writing "
                    f"{writing:.1f} s)"
                )
    finally:
        closing = time.perf_counter()
        writer.close()
        echo(
            f"  indexes rebuilt{' and tables analysed' if writer.dialect == 'postgresql' else ''} in "
            f"{time.perf_counter() - closing:.1f} s"
        )
    seconds = time.perf_counter() - began
    echo(f"seeded {therapies:,} therapies ({active:,} active) over {len(codes)} sites in {seconds:.1f} s")
    return Seeded(database_url, therapies, active, codes, tokens, active_ids, int(written), seconds, templates_seconds)


def seeded_benchmark(
    prog: str, description: str, therapies: int, argv: list[str] | None, measure: Callable[..., list]
) -> list:
    """The command line of the benchmarks over bulk-seeded therapies (``bench.scale``, ``bench.tower``): parse
    the options, then on each database (or the one ``--database`` names) seed unless it already holds data and
    return ``measure(url, backend, options, seconds)``'s figures (``seconds``: the seeding's, or None)."""
    from ._common import backends, fresh_database

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--therapies", type=int, default=therapies)
    parser.add_argument("--active", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per URL")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), help="only this database")
    parser.add_argument("--database", help="an existing database to use (seeded first when empty)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    options = parser.parse_args(argv if argv is not None else [])

    def on(url: str, backend: str) -> list:
        seconds = None
        if not _holds_data(url):
            seconds = seed(url, options.therapies, options.active, options.sites).seconds
            print(f"{backend}: seeded in {seconds:.1f} s", flush=True)
        return measure(url, backend, options, seconds)

    if options.database:
        return on(options.database, "postgresql" if options.database.startswith("postgresql") else "sqlite")
    figures: list = []
    for backend in backends(options.backend):
        with fresh_database(backend) as url:
            figures.extend(on(url, backend))
    return figures


def _holds_data(database_url: str) -> bool:
    """Whether the database was seeded already (it has a site)."""
    from server.store.extensions import db
    from server.store.models import Site

    from ._common import make_app

    app = make_app(database_url)
    with app.app_context():
        found = db.session.execute(select(Site.id).limit(1)).first() is not None
        db.session.remove()
        db.engine.dispose()
    return found


def main(argv: list[str] | None = None) -> Seeded:
    """Seed the database named on the command line and print the API tokens."""
    import os

    parser = argparse.ArgumentParser(prog="python -m bench._seed", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database",
        default=os.environ.get("TETHER_BENCH_DATABASE_URL"),
        required=False,
        help="SQLAlchemy URL of an empty database (migrated here when needed)",
    )
    parser.add_argument("--therapies", type=int, default=100_000)
    parser.add_argument("--active", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=4, help="treatment centres to spread the therapies over")
    parser.add_argument("--seed", type=int, default=1, help="random seed (sites, stages, times)")
    options = parser.parse_args(argv)
    if not options.database:
        parser.error("--database is required (or set TETHER_BENCH_DATABASE_URL)")
    seeded = seed(options.database, options.therapies, options.active, options.sites, random_seed=options.seed)
    print(f"API tokens (password of every user: {PASSWORD}):")
    for username, token in seeded.tokens.items():
        print(f"  {username:<16} {token}")
    return seeded


if __name__ == "__main__":
    main()
