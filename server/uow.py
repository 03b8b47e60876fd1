"""One use case, one transaction: everything it writes commits together or not at all.

On SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` so two writers queue instead of
deadlocking; on PostgreSQL row versions and row locks do the same job. Work that must wait for the
commit (arming timers, waking live streams) is registered with ``after_commit``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

from flask import current_app
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from .errors import Conflict
from .extensions import db

_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_write_intent", default=False)
_after_commit: contextvars.ContextVar[list | None] = contextvars.ContextVar("tether_after_commit", default=None)


def configure_sqlite(engine) -> None:
    """Let the application, not the driver, begin SQLite transactions (deferred to read, immediate to write)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


def after_commit(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current unit of work has committed (dropped on rollback)."""
    pending = _after_commit.get()
    if pending is None:
        callback()
    else:
        pending.append(callback)


@contextlib.contextmanager
def unit_of_work() -> Iterator[None]:
    """Run the enclosed writes as one transaction; a concurrent change turns into 409."""
    db.session.commit()  # close any read-only transaction opened by authentication
    intent = _write_intent.set(True)
    callbacks: list = []
    pending = _after_commit.set(callbacks)
    try:
        yield
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise Conflict("Someone else changed this therapy at the same moment; reload and try again.",
                       code="version_conflict") from None
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("The change conflicts with one made at the same moment; reload and try again.",
                       code="conflict", details={"reason": type(exc.orig).__name__}) from None
    except OperationalError as exc:
        db.session.rollback()
        if "locked" in str(exc).lower() or "deadlock" in str(exc).lower():
            raise Conflict("The database was busy with a concurrent change; try again.",
                           code="busy") from None
        raise
    except BaseException:
        db.session.rollback()
        raise
    finally:
        _write_intent.reset(intent)
        _after_commit.reset(pending)
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a post-commit hook must never undo or hide a committed change
            current_app.logger.exception("after-commit hook failed")
