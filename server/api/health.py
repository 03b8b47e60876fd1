"""Health and API documentation."""

from __future__ import annotations

import sqlite3

from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from server.store.extensions import db

from . import bp


@bp.get("/health")
def health():
    """Whether the database answers, writes get through and the timer scheduler runs (200), else 503; and
    whether the message broker is reached (reported, never a 503)."""
    database = "ok"
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception:  # any database failure is reported, not raised
        database = "unavailable"
    writes = _write_probe(float(current_app.config["HEALTH_WRITE_TIMEOUT"])) if database == "ok" else "unavailable"
    scheduler = current_app.extensions.get("tether_scheduler")
    state = "running" if scheduler is not None and scheduler.running else "stopped"
    if not current_app.config.get("SCHEDULER"):
        state = "disabled"
    ok = database == "ok" and writes == "ok" and state in ("running", "disabled")
    answer = {"status": "ok" if ok else "degraded", "database": database, "writes": writes, "scheduler": state}
    answer["broker"] = _broker_state()
    return jsonify(answer), (200 if ok else 503)


def _broker_state() -> str:
    """``off`` without a broker; ``connected`` while this process's publisher (and consumer) reach it, else
    ``unreachable`` (events wait in the outbox and messages in the broker's queue, so the API stays up)."""
    if not current_app.config.get("BROKER_URL"):
        return "off"
    links = [current_app.extensions.get(n) for n in ("tether_broker_publisher", "tether_broker_consumer")]
    running = [link for link in links if link is not None]
    if not running:
        return "not started"
    return "connected" if all(link.connected for link in running) else "unreachable"


def _write_probe(timeout: float) -> str:
    """ "ok" when a writer could take the write lock within ``timeout`` seconds, else "stuck".

    Every write transaction takes SQLite's write lock; on PostgreSQL every write without a therapy (logins,
    accounts, deployments, refusals) locks the "system" audit chain's head row as it commits: a writer that holds
    either for longer stops those writes. The probe takes the lock and lets it go at once, changing nothing.
    """
    try:
        if db.engine.dialect.name == "sqlite":
            path = db.engine.url.database
            if not path or path == ":memory:":
                return "ok"
            raw = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            finally:
                raw.close()
            return "ok"
        with db.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(text(f"SET LOCAL lock_timeout = {int(timeout * 1000)}"))
                connection.execute(text("SELECT seq FROM audit_chain_head WHERE chain = 'system' FOR UPDATE"))
            finally:
                transaction.rollback()
        return "ok"
    except (sqlite3.OperationalError, OperationalError, DBAPIError) as exc:
        text_of = str(exc).lower()
        if "locked" in text_of or "lock timeout" in text_of or "lock_timeout" in text_of or "canceling" in text_of:
            return "stuck"
        return "unavailable"


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of every endpoint."""
    from server.api.openapi import build_document

    return jsonify(build_document(current_app))
