"""The list queries at scale: the inbox order, the indexes they read in order, and no engine state read for lists.

``bench.scale`` measures these endpoints over 100,000 therapies; these tests keep what made them fast (the
indexes of migration 0003, loader options that leave the engine state in the database) from quietly going.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta

from sqlalchemy import event
from sqlalchemy import select as sa_select

from ..conftest import ROOT
from ..support.journeys import start
from .test_web_pages import _log_in

PROCESSES = ROOT / "processes"
FIXTURES = ROOT / "tests" / "fixtures"


@contextlib.contextmanager
def statements(app):
    """Every SELECT the app runs inside the block, with its parameters."""
    from server.store.extensions import db

    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and not executemany:
            seen.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", grab)


def plan(app, statement: str, parameters) -> list[str]:
    """The query plan of one captured statement (PostgreSQL: sequential scans and sorts made expensive, so the
    plan shows whether an index can give the rows in order at all, whatever the tiny tables' statistics)."""
    from server.store.extensions import db

    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            if db.engine.dialect.name == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                return [row[3] for row in cursor.fetchall()]
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
            cursor.execute("EXPLAIN " + statement, parameters)
            return [row[0] for row in cursor.fetchall()]
        finally:
            connection.rollback()
            connection.close()


def full_sort(lines: list[str]) -> bool:
    """Whether a plan sorts all the rows it reads (not only ties of an index order)."""
    return any(
        line.startswith("USE TEMP B-TREE FOR ORDER BY") or re.search(r"(^|->\s*)Sort\s+\(", line.strip())
        for line in lines
    )


def deploy(app, *paths) -> None:
    from server.workflow.definitions import deploy as deploy_definition

    with app.app_context():
        for path in paths:
            deploy_definition(path.read_bytes(), {}, "test")


def test_inbox_lists_soonest_due_first_and_undated_tasks_last_across_pages(api, world, clock):
    app = api.client.application
    deploy(app, PROCESSES / "autologous-car-t.bpmn", FIXTURES / "timers-user-task.bpmn")
    coord = api.as_(world["coord"])
    first = start(api, world["coord"], "mini_therapy", reference="PT-1")  # due in 24 h
    clock.advance(hours=1)
    undated_early = start(api, world["coord"], "autologous_car_t", reference="PT-2")  # no due time
    second = start(api, world["coord"], "mini_therapy", reference="PT-3")  # due in 25 h
    clock.advance(hours=1)
    soonest = start(api, world["coord"], "timers_user_task", reference="PT-4")  # due in 4 h
    clock.advance(hours=1)
    undated_late = start(api, world["coord"], "autologous_car_t", reference="PT-5")
    cancelled = start(api, world["coord"], "mini_therapy", reference="PT-6")
    assert coord.post(f"/api/v1/therapies/{cancelled['id']}/cancel", json={"reason": "withdrawn"}).status_code == 200
    elsewhere = start(api, world["coordb"], site="SITE-B", reference="PT-7")

    seen, cursor = [], None
    while True:
        page = coord.get("/api/v1/tasks?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    order = [soonest["id"], first["id"], second["id"], undated_early["id"], undated_late["id"]]
    assert [t["therapy_id"] for t in seen] == order
    assert [t["due_at"] is None for t in seen] == [False, False, False, True, True]
    dues = [t["due_at"] for t in seen[:3]]
    assert dues == sorted(dues)
    assert seen[1]["due_at"] == (clock.now - timedelta(hours=3) + timedelta(hours=24)).isoformat().replace(
        "+00:00", "Z"
    )
    assert elsewhere["id"] not in {t["therapy_id"] for t in seen}
    assert all(t["coi"] for t in seen) and isinstance(seen[1]["form"]["schema"], dict)
    # The web inbox shows the same tasks in the same order.
    client = app.test_client()
    _log_in(client, "coord")
    page = client.get("/tasks").get_data(as_text=True)
    positions = [page.index(f"/therapies/{therapy_id}") for therapy_id in order]
    assert positions == sorted(positions)
    assert f"/therapies/{cancelled['id']}" not in page


def test_lists_read_their_index_in_order(api, world, clock):
    app = api.client.application
    for number in range(3):
        start(api, world["coord"], "mini_therapy", reference=f"PT-{number}")
        clock.advance(minutes=5)
    wanted = {
        "/api/v1/tasks": "ix_task_inbox",
        # A site's therapies, whichever party it is, newest first (the status is checked row by row).
        "/api/v1/therapies": "ix_therapy_party_site",
        "/api/v1/therapies?status=active": "ix_therapy_party_site",
        "/api/v1/therapies?process_key=mini_therapy": "ix_therapy_",
    }
    for path, index in wanted.items():
        with statements(app) as seen:
            assert api.as_(world["coord"]).get(path).status_code == 200
        statement, parameters = next(
            (s, p) for s, p in seen if "ORDER BY" in s and ("FROM task" in s or "FROM therapy" in s)
        )
        lines = plan(app, statement, parameters)
        assert any(index in line for line in lines), (path, lines)
        assert not full_sort(lines), (path, lines)
    # Everyone's therapies (an admin), newest first, with and without a status filter. With the filter, either
    # index gives the rows in order: the status and creation one, or the creation one with the status checked row
    # by row (PostgreSQL picks by the statistics the earlier tests of a reused database left).
    for path, indexes in {
        "/api/v1/therapies": ("ix_therapy_created",),
        "/api/v1/therapies?status=active": ("ix_therapy_status_created", "ix_therapy_created"),
    }.items():
        with statements(app) as seen:
            assert api.as_(world["admin"]).get(path).status_code == 200
        statement, parameters = next((s, p) for s, p in seen if "ORDER BY" in s and "FROM therapy" in s)
        lines = plan(app, statement, parameters)
        assert any(index in line for index in indexes for line in lines) and not full_sort(lines), (path, lines)


def test_a_therapys_tasks_of_one_status_are_read_by_therapy(api, world):
    """Looking up one therapy's open (or completed) tasks reads that therapy's rows, not every open task."""
    app = api.client.application
    therapy = start(api, world["coord"], "mini_therapy", reference="PT-1")
    with statements(app) as seen:
        assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").status_code == 200
    for statement, parameters in seen:
        if "FROM task" in statement and "task.therapy_id =" in statement:
            lines = plan(app, statement, parameters)
            # (ix_task_ready_due, the control tower's, begins with the status and the therapy too)
            assert any("ix_task_therapy_status" in line or "ix_task_ready_due" in line for line in lines), lines


def test_lists_and_detail_leave_the_engine_state_in_the_database(api, world):
    app = api.client.application
    therapy = start(api, world["coord"], "mini_therapy", reference="PT-1")
    client = app.test_client()
    _log_in(client, "coord")
    reads = {
        "API inbox": lambda: api.as_(world["coord"]).get("/api/v1/tasks"),
        "API list": lambda: api.as_(world["coord"]).get("/api/v1/therapies"),
        "web inbox": lambda: client.get("/tasks"),
        "control tower": lambda: client.get("/dashboard"),
    }
    for name, read in reads.items():
        with statements(app) as seen:
            assert read().status_code == 200
        assert seen, name
        for statement, _ in seen:
            assert not re.search(r"\btherapy(_\d+)?\.state\b", statement), (name, statement)
    with statements(app) as seen:
        assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").status_code == 200
    own = [s for s, _ in seen if re.search(r"\bFROM therapy\b", s) and re.search(r"WHERE therapy\.id = ", s)]
    assert own and not any(re.search(r"\btherapy\.state\b", s) for s in own), own


def test_a_therapy_list_reads_its_page_in_a_fixed_number_of_statements(app, api, world):
    """Each summary says whether the therapy can be sent back to scheduling (from its waits): read with the page,
    not one therapy at a time, however many active therapies the page holds."""
    from server.store.extensions import db
    from server.store.statements import counted, summary

    for number in range(6):
        start(api, world["coord"], reference=f"PT-LIST-{number}")
    with app.app_context():
        engine = db.engine
    for token in (world["coord"], world["admin"]):
        with counted(engine) as seen:
            listed = api.as_(token).get("/api/v1/therapies")
        assert listed.status_code == 200 and len(listed.get_json()["items"]) >= 6
        assert all("reschedulable" in item for item in listed.get_json()["items"])
        assert len([s for s in seen if str(s) == "SELECT therapy"]) == 1, summary(seen)


def test_a_calendar_window_free_slots_and_a_therapys_bookings_read_their_indexes(api, world, clock, database_url):
    """A window of a site's calendar reads its slots from those ending after its start (not every slot the
    site ever had), free slots are read from the open slots with a place left (not the full past ones), and a
    therapy's bookings, its history included, are read by therapy."""
    from server.clock import iso
    from server.store.extensions import db
    from server.store.models import Booking, Site, Slot

    app = api.client.application
    therapy = start(api, world["coord"], reference="PT-CAL")
    now = clock()
    with app.app_context():
        site = db.session.execute(sa_select(Site).where(Site.code == "SITE-A")).scalar_one()
        slots = [
            Slot(
                site_id=site.id,
                kind="apheresis",
                start_at=now + timedelta(days=day - 30),
                end_at=now + timedelta(days=day - 30, hours=4),
                capacity=1,
                booked=0,
                status="open",
                created_at=now,
                created_by="test",
            )
            for day in range(60)
        ]
        db.session.add_all(slots)
        db.session.flush()
        db.session.add(
            Booking(
                therapy_id=therapy["id"],
                slot_id=slots[0].id,
                kind="apheresis",
                status="cancelled",
                created_at=now,
                created_by="test",
            )
        )
        db.session.commit()
    window = f"/api/v1/slots?site=SITE-A&kind=apheresis&from={iso(now)}&to={iso(now + timedelta(days=7))}"
    for path, index, backends in (
        (window, "ix_slot_site_kind_end", ("sqlite",)),
        ("/api/v1/slots?site=SITE-A&kind=apheresis&available=true", "ix_slot_free", ("sqlite",)),
        (f"/api/v1/therapies/{therapy['id']}/bookings", "ix_booking_therapy", ("sqlite", "postgresql")),
    ):
        with statements(app) as seen:
            answer = api.as_(world["coord"]).get(path)
        assert answer.status_code == 200, answer.get_json()
        statement, parameters = next((s, p) for s, p in seen if "FROM slot" in s or "FROM booking" in s)
        if database_url.split(":")[0].split("+")[0] in backends:
            lines = plan(app, statement, parameters)
            assert any(index in line for line in lines), (path, lines)
    listed = api.as_(world["coord"]).get(window).get_json()["items"]
    assert len(listed) == 7
