"""The audit entry of a refused request survives a busy database: retried, then spooled, then chained.

The database is made busy the way a long writer does it: another connection holds SQLite's write lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time

import pytest
import sqlalchemy as sa

from ..support.journeys import ENROLMENT, complete, enrol, only_task, start
from .conftest import PASSWORD  # noqa: F401  (the world's users log in with it)


@pytest.fixture
def busy_app(app, world, tmp_path):
    """The app with a short busy timeout (0.2 s instead of 30 s) and its audit spool under ``tmp_path``."""
    from server.store.extensions import db

    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("holds SQLite's write lock")
        sa.event.listen(db.engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout=200"))
        db.engine.dispose()
    app.config["AUDIT_SPOOL_DIR"] = str(tmp_path / "spool")
    app.extensions.pop("tether_audit_spool", None)
    return app


@contextlib.contextmanager
def write_lock(database_url):
    """Hold the database's write lock from another connection for the enclosed block."""
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def spooled(app) -> list[dict]:
    from server.store.audit_spool import spool_path

    path = spool_path(app)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def refusals(app) -> list[tuple]:
    from server.store.extensions import db
    from server.store.models import AuditEntry

    with app.app_context():
        rows = (
            db.session.execute(
                sa.select(AuditEntry).where(AuditEntry.action.like("%.refused")).order_by(AuditEntry.seq)
            )
            .scalars()
            .all()
        )
        return [(e.action, e.actor, e.data["status"], e.data.get("code"), e.data.get("spooled")) for e in rows]


def verify(app):
    from server.store import audit

    with app.app_context():
        return audit.verify()


def test_a_refusal_during_a_busy_database_is_spooled_and_chained_at_the_next_write(
    busy_app, api, world, database_url, monkeypatch
):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    with write_lock(database_url):
        wrong_role = complete(api, world["logistics"], task["id"], {})
        not_allowed = api.as_(world["designer"]).post(
            "/api/v1/messages", json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {}}
        )
    assert wrong_role.status_code == 403 and not_allowed.status_code == 403  # the refusals themselves stand
    assert [(e["action"], e["actor"], e["data"]["spooled"]) for e in spooled(busy_app)] == [
        ("task.refused", "logistics", True),
        ("message.refused", "designer", True),
    ]
    assert refusals(busy_app) == []
    assert verify(busy_app)["spooled"] == 2, "the check says what it cannot verify yet"
    assert "2 audit entries of refused requests wait in the audit spool" in tether_verify(busy_app, monkeypatch)
    start(api, world["coord"])  # the database takes writes again
    assert refusals(busy_app) == [
        ("task.refused", "logistics", 403, wrong_role.get_json()["error"]["code"], True),
        ("message.refused", "designer", 403, "forbidden", True),
    ]
    assert spooled(busy_app) == []
    assert verify(busy_app)["ok"] is True and verify(busy_app)["spooled"] == 0
    assert "spool" not in tether_verify(busy_app, monkeypatch)


def tether_verify(app, monkeypatch) -> str:
    """What ``tether audit verify`` prints for ``app``."""
    from click.testing import CliRunner

    from server import cli

    monkeypatch.setattr(cli, "_app", lambda: app)
    return CliRunner().invoke(cli.main, ["audit", "verify"]).stdout


def test_an_endpoints_own_refusal_answers_as_itself_while_the_database_is_busy(busy_app, api, world, database_url):
    therapy = start(api, world["coord"])
    task = enrol(api, world, therapy)
    with write_lock(database_url):
        twice = complete(api, world["coord"], task["id"], ENROLMENT)
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] != "busy", twice.get_json()
    [entry] = spooled(busy_app)
    assert (entry["action"], entry["data"]["status"]) == ("task.refused", 409)
    from server.store import audit

    with busy_app.app_context():
        assert audit.replay_spool() == 1
        assert audit.replay_spool() == 0
    assert refusals(busy_app)[-1][:3] == ("task.refused", "coord", 409)
    assert verify(busy_app)["ok"] is True


def test_the_dispatcher_loop_chains_the_spool_once_the_lock_is_released(busy_app, api, world, database_url):
    from server.integration.dispatcher import Dispatcher

    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    busy_app.config["WEBHOOK_POLL_SECONDS"] = 0.05
    dispatcher = Dispatcher(busy_app)
    try:
        with write_lock(database_url):
            refused = complete(api, world["logistics"], task["id"], {})
            assert refused.status_code == 403
            dispatcher.start()
            time.sleep(0.5)  # the loop tries while the lock is held, and keeps the spool
            assert len(spooled(busy_app)) == 1
        deadline = time.monotonic() + 10
        while spooled(busy_app) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    assert spooled(busy_app) == []
    assert [r[:3] for r in refusals(busy_app)] == [("task.refused", "logistics", 403)]
    assert verify(busy_app)["ok"] is True


def test_an_entry_chained_before_a_crash_is_not_chained_twice_and_a_torn_line_is_skipped(
    busy_app, api, world, database_url
):
    from server.store import audit
    from server.store.audit_spool import spool_path

    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    with write_lock(database_url):
        assert complete(api, world["logistics"], task["id"], {}).status_code == 403
    line = spool_path(busy_app).read_text()
    with busy_app.app_context():
        assert audit.replay_spool() == 1
    spool_path(busy_app).write_text(line + '{"action": "task.refu')  # as if the process died before emptying it
    with busy_app.app_context():
        assert audit.replay_spool() == 0
    assert len(refusals(busy_app)) == 1 and spooled(busy_app) == []
    assert verify(busy_app)["ok"] is True


@contextlib.contextmanager
def row_lock(database_url, therapy_id):
    """Hold the therapy's row from another PostgreSQL connection (a stuck transaction) for the enclosed block."""
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as holder:
        holder.execute("SELECT id FROM therapy WHERE id = %s FOR UPDATE", (therapy_id,))
        yield
        holder.rollback()


def test_a_postgresql_writer_waits_at_most_the_lock_timeout_then_is_refused_busy_and_changes_nothing(
    app, api, world, database_url
):
    from server.store.extensions import db
    from server.store.uow import configure_postgresql

    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks")
    with app.app_context():
        app.config["PG_LOCK_TIMEOUT_MS"] = 300
        configure_postgresql(db.engine)  # set after the default one on each new connection
        db.engine.dispose()
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    with row_lock(database_url, therapy["id"]):
        began = time.monotonic()
        held = complete(api, world["coord"], task["id"], ENROLMENT)
        waited = time.monotonic() - began
    assert held.status_code == 409 and held.get_json()["error"]["code"] == "busy", held.get_json()
    assert waited < 10, "refused after the lock timeout, not after the other transaction ended"
    assert only_task(api, world["coord"], therapy["id"])["id"] == task["id"], "nothing changed"
    assert complete(api, world["coord"], task["id"], ENROLMENT).status_code == 200
    assert verify(app)["ok"] is True
