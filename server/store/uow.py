"""One use case, one transaction: everything it writes commits together or not at all.

On SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` so two writers queue instead of
deadlocking; on PostgreSQL row versions and row locks do the same job. Work that must wait for the
commit (arming timers, waking live streams) is registered with ``after_commit``.

What a use case records for others (audit entries, outbox events) is staged in the transaction
(``staged``) and sealed when the unit of work ends, by the commit steps the app factory names with
``init_app``, in their order: the outbox events are fanned out to webhook deliveries
(``server.integration.webhooks.fan_out_staged``, which also rings the dispatcher's bell after the commit),
then the audit entries are chained onto the trail (``server.store.audit.chain_staged``, last because it
locks the chain's head until the commit). Then the transaction commits and the ``after_commit`` hooks run.

A request that must commit as a whole (one carrying an ``Idempotency-Key``, see ``server/api/idempotency.py``)
runs inside ``enclosing_transaction()``: every ``unit_of_work()`` within it becomes a SAVEPOINT that is
released, not committed, and the request's own answer is written and committed together with its effect.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from flask import Flask, current_app
from sqlalchemy import CursorResult, Executable, Table, bindparam, event, insert, inspect, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import InstanceState, Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.orm.exc import StaleDataError

from server.errors import Conflict
from server.store.extensions import db

_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_write_intent", default=False)
_after_commit: contextvars.ContextVar[list | None] = contextvars.ContextVar("tether_after_commit", default=None)
_enclosing: contextvars.ContextVar[Enclosing | None] = contextvars.ContextVar("tether_enclosing", default=None)

DEFAULT_BUSY_TIMEOUT_MS = 30000
COMMIT_STEPS = "tether_commit_steps"  # in app.extensions: what a unit of work runs before it commits, in order


def init_app(app: Flask, commit_steps: Sequence[Callable[[], object]]) -> None:
    """Name the steps every unit of work runs, in this order, as its last writes before it commits.

    Each step seals what the transaction staged under one name (``take_staged``); a step that fails fails
    the unit of work like any of its writes. The app factory names them (the store cannot name the outbox's).
    """
    app.extensions[COMMIT_STEPS] = tuple(commit_steps)


def _run_commit_steps() -> None:
    """Run the commit steps of the app (``init_app``), in order, inside the transaction about to commit."""
    for step in current_app.extensions.get(COMMIT_STEPS, ()):
        step()


def configure_sqlite(engine) -> None:
    """Let the application, not the driver, begin SQLite transactions (deferred to read, immediate to write).

    A writer waits up to ``SQLITE_BUSY_TIMEOUT_MS`` for another one's lock before the request is refused
    with 409 ``busy``.
    """
    busy_timeout = int(current_app.config.get("SQLITE_BUSY_TIMEOUT_MS", DEFAULT_BUSY_TIMEOUT_MS))

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout:d}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


def configure_postgresql(engine) -> None:
    """Make a PostgreSQL writer wait at most ``PG_LOCK_TIMEOUT_MS`` for a row another transaction holds, then be
    refused with 409 ``busy`` (as on SQLite) instead of queueing for ever behind a stuck transaction."""
    lock_timeout = int(current_app.config.get("PG_LOCK_TIMEOUT_MS", DEFAULT_BUSY_TIMEOUT_MS))

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET lock_timeout = {lock_timeout:d}")
        cursor.close()
        dbapi_connection.commit()


def after_commit(callback: Callable[[], object]) -> None:
    """Run ``callback`` once the current unit of work has committed (dropped on rollback); its result is unused."""
    pending = _after_commit.get()
    if pending is None:
        callback()
    else:
        pending.append(callback)


def rows_changed(statement: Executable) -> int:
    """Execute an UPDATE or DELETE in the current session; how many rows it matched.

    ``Session.execute`` is declared to return a ``Result``; for a DML statement without RETURNING it is the
    ``CursorResult`` of the cursor, which carries ``rowcount``.
    """
    return cast(CursorResult, db.session.execute(statement)).rowcount


def _run_callbacks(callbacks: list) -> None:
    """Run the post-commit hooks of a committed transaction; a failing hook is logged, never raised."""
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a post-commit hook must never undo or hide a committed change
            current_app.logger.exception("after-commit hook failed")


def conflict_for(exc: Exception) -> Conflict | None:
    """The 409 a database error stands for when a concurrent change caused it (None for any other error)."""
    if isinstance(exc, StaleDataError):
        return Conflict(
            "Someone else changed this therapy at the same moment; reload and try again.", code="version_conflict"
        )
    if isinstance(exc, IntegrityError):
        return Conflict(
            "The change conflicts with one made at the same moment; reload and try again.",
            code="conflict",
            details={"reason": type(exc.orig).__name__},
        )
    if isinstance(exc, OperationalError) and (
        "locked" in str(exc).lower() or "deadlock" in str(exc).lower() or _sqlstate(exc) == LOCK_NOT_AVAILABLE
    ):
        return Conflict("The database was busy with a concurrent change; try again.", code="busy")
    return None


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout passed


def _sqlstate(exc: OperationalError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


@contextlib.contextmanager
def _kept(session: Session, keep: bool) -> Iterator[None]:
    """With ``keep``, a commit inside the block leaves the session's objects loaded instead of expiring them."""
    if not keep:
        yield
        return
    before = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = before


@contextlib.contextmanager
def unit_of_work(*, keep_loaded: bool = False) -> Iterator[None]:
    """Run the enclosed writes as one transaction; a concurrent change turns into 409.

    With ``keep_loaded``, what was read before the unit began is not read again inside it, nor after its
    commit: the caller's rows must carry a version check (``Therapy.row_version``), so that a change someone
    committed in between fails the unit with 409 ``version_conflict`` instead of being overwritten. A task
    completion uses it: the task and its therapy were read for the checks, the engine step runs on them, and
    the answer is built from what was written.

    Inside ``enclosing_transaction()``, or inside another unit of work (a use case that books a place and
    records it in the process data, an operator that books inside an engine step), the writes form a SAVEPOINT
    instead: an error inside takes back only this unit's writes (and its audit entries), and its post-commit
    hooks wait for the outer commit.
    """
    if _enclosing.get() is not None or _after_commit.get() is not None:
        with _savepoint_unit():
            yield
        return
    session = db.session()
    # Close any read-only transaction opened by authentication (on SQLite a writer must begin its own, with
    # BEGIN IMMEDIATE). On PostgreSQL a unit that keeps what it read goes on in that transaction instead: its
    # writes are checked by version, and the commit, the connection's return to the pool (and its ping at the
    # next checkout) and a new BEGIN are saved.
    if not (keep_loaded and session.get_bind().dialect.name == "postgresql"):
        with _kept(session, keep_loaded):
            session.commit()
    intent = _write_intent.set(True)
    callbacks: list = []
    pending = _after_commit.set(callbacks)
    try:
        yield
        _run_commit_steps()
        with _kept(session, keep_loaded):
            session.commit()
    except (StaleDataError, IntegrityError, OperationalError) as exc:
        db.session.rollback()
        conflict = conflict_for(exc)
        if conflict is None:
            raise
        raise conflict from None
    except BaseException:
        db.session.rollback()
        raise
    finally:
        _write_intent.reset(intent)
        _after_commit.reset(pending)
    _run_callbacks(callbacks)


def write_through(*models: type) -> None:
    """Write the session's new and changed rows of ``models`` now, with Core statements instead of a flush, and
    leave their objects as a flush would: persistent, loaded, with nothing left to write.

    A changed row is one UPDATE of the columns that changed (rows changing the same columns go in one batch); a
    row with a version column (``Therapy.row_version``) is updated only at the version it was read at, and moves
    to the next: a change committed meanwhile fails the unit of work with 409 ``version_conflict``, as a flush
    would. New rows go in with one INSERT per table, with their columns' defaults. An object whose relationships
    changed is left to the flush. A unit of work that keeps what it read (a task completion) calls it after its
    last change to these rows."""
    session = db.session()
    connection = session.connection()  # the statements go straight to it: no autoflush, no ORM
    batches: dict[tuple, list[dict]] = {}
    written: list[tuple[InstanceState, dict]] = []
    for obj in session.dirty:
        state = inspect(obj)
        if not isinstance(obj, models) or not state.persistent or _relationships_changed(state):
            continue
        mapper = state.mapper
        row = {key: state.dict.get(key) for key in state.committed_state if state.attrs[key].history.has_changes()}
        if not row or not set(row) <= set(mapper.column_attrs.keys()):
            continue  # nothing to write, or not only columns: left to the flush
        if mapper.version_id_col is not None:
            version = mapper.get_property_by_column(mapper.version_id_col).key
            row["b_version"], row[version] = state.dict[version], state.dict[version] + 1
        written.append((state, row))
        row = {**row, "b_pk": mapper.primary_key_from_instance(obj)[0]}
        batches.setdefault((mapper, tuple(sorted(row))), []).append(row)
    for (mapper, _keys), rows in batches.items():
        if mapper.version_id_col is None:
            connection.execute(_update_of(mapper), rows if len(rows) > 1 else rows[0])
            continue
        for row in rows:  # one at a time: a batch's count of matched rows is not exact with every driver
            if connection.execute(_update_of(mapper), row).rowcount != 1:
                raise StaleDataError(f"{mapper.local_table.name}: a row changed since it was read")
    for state, row in written:
        state.dict.update((key, value) for key, value in row.items() if key != "b_version")
        state._commit_all(state.dict, session.identity_map)
    inserts: dict[Table, list] = {}
    for obj in list(session.new):
        state = inspect(obj)
        if isinstance(obj, models) and not _relationships_changed(state):
            inserts.setdefault(state.mapper.local_table, []).append(obj)
    for table, objects in inserts.items():
        objects = [obj for obj in objects if _complete_without_flush(table, obj)]
        if not objects:
            continue
        connection.execute(_insert_into(table), [_new_row(table, obj) for obj in objects])
        for obj in objects:
            session.expunge(obj)
            make_transient_to_detached(obj)
            session.add(obj)


def _relationships_changed(state: InstanceState) -> bool:
    """Whether any relationship of the object was changed (only a flush writes those)."""
    return any(state.attrs[key].history.has_changes() for key in state.mapper.relationships.keys())


def _complete_without_flush(table: Table, obj: object) -> bool:
    """Whether every column of the new object has a value or a Python default (else the flush writes it)."""
    values = obj.__dict__
    return all(
        column.key in values
        or column.default is None
        and column.server_default is None
        and not column.primary_key
        or getattr(column.default, "is_callable", False)
        or getattr(column.default, "is_scalar", False)
        for column in table.columns
    )


def _new_row(table: Table, obj: object) -> dict:
    """The columns of a new object, with their defaults where it has none (also set on the object, as a flush
    would)."""
    values = obj.__dict__
    for column in table.columns:
        if column.key not in values:
            default = column.default
            if default is None:
                values[column.key] = None
            elif getattr(default, "is_callable", False):
                values[column.key] = default.arg(None)  # type: ignore[attr-defined]
            elif getattr(default, "is_scalar", False):
                values[column.key] = default.arg  # type: ignore[attr-defined]
            else:  # pragma: no cover - left to the flush (``_complete_without_flush``)
                raise ValueError(f"{table.name}.{column.key} has no value and no Python default")
    return {column.key: values[column.key] for column in table.columns}


@functools.cache
def _update_of(mapper) -> Executable:
    """An UPDATE of ``mapper``'s table by its primary key (``b_pk``), and its version (``b_version``) when it has
    one, whose SET clause is the columns each execution gives; built once per mapper (a statement object caches
    its compiled form)."""
    statement = update(mapper.local_table).where(mapper.primary_key[0] == bindparam("b_pk"))
    if mapper.version_id_col is not None:
        statement = statement.where(mapper.version_id_col == bindparam("b_version"))
    return statement


@functools.cache
def _insert_into(table: Table) -> Executable:
    """The INSERT of ``table``, executed with its rows (one batch); built once per table."""
    return insert(table)


STAGED = "tether_staged"  # in session.info: name -> what the transaction stages until it commits


def staged(name: str) -> list:
    """The list of objects staged under ``name`` in the current transaction (the audit trail stages its
    entries here, the outbox its events) until a commit step takes them; a savepoint's rollback takes back
    what it staged, and a transaction that ends without committing drops them."""
    return db.session.info.setdefault(STAGED, {}).setdefault(name, [])


def take_staged(name: str) -> list:
    """Remove and return what the current transaction staged under ``name`` (a commit step's input)."""
    return db.session.info.get(STAGED, {}).pop(name, None) or []


@contextlib.contextmanager
def savepoint() -> Iterator[None]:
    """A SAVEPOINT whose rollback also puts back what was staged as it was when the savepoint began.

    The staging of the transaction is put back in place: when the whole transaction was rolled back
    meanwhile, its staging went with it (``_drop_staged``) and stays gone.
    """
    session = db.session
    staging = session.info.setdefault(STAGED, {})
    before = {name: list(items) for name, items in staging.items()}
    try:
        with session.begin_nested():
            yield
    except BaseException:
        staging.clear()
        staging.update(before)
        raise


class LazySavepoint:
    """A SAVEPOINT taken only when something is about to be written under it (see ``savepoint_when_needed``)."""

    def __init__(self) -> None:
        self.transaction: SessionTransaction | None = None
        self.staged_before: dict[str, list] = {}

    def open(self) -> None:
        """Take the savepoint now, unless it was taken already."""
        if self.transaction is None:
            session = db.session()
            self.staged_before = {name: list(items) for name, items in session.info.setdefault(STAGED, {}).items()}
            self.transaction = session.begin_nested()


@contextlib.contextmanager
def savepoint_when_needed() -> Iterator[LazySavepoint]:
    """What ``savepoint()`` does, for a block that may write nothing: the SAVEPOINT is taken when the block calls
    ``open()`` on what it is given (before its first write), and when the block fails, whatever was written and
    staged since is taken back. A block that never opens it sends no statement at all: an engine step without a
    service task then runs before its unit of work has taken the write lock."""
    lazy = LazySavepoint()
    try:
        yield lazy
    except BaseException:
        if lazy.transaction is not None:
            if lazy.transaction.is_active:
                lazy.transaction.rollback()
            staging = db.session.info.setdefault(STAGED, {})
            staging.clear()
            staging.update(lazy.staged_before)
        raise
    if lazy.transaction is not None and lazy.transaction.is_active:
        lazy.transaction.commit()


@contextlib.contextmanager
def _savepoint_unit() -> Iterator[None]:
    """A unit of work inside an enclosing transaction: a SAVEPOINT, released when the unit succeeds.

    The commit steps run at its end, inside the savepoint, so what the unit returns is sealed (its audit
    entries have their places in the chain); when the unit fails, what was staged before it stays staged
    for the enclosing commit.
    """
    outer = _after_commit.get()
    callbacks: list = []
    pending = _after_commit.set(callbacks)
    try:
        with savepoint():
            yield
            db.session.flush()  # a failing write fails here, inside the savepoint it belongs to
            _run_commit_steps()
    except (StaleDataError, IntegrityError, OperationalError) as exc:
        conflict = conflict_for(exc)
        if conflict is None:
            raise
        raise conflict from None
    finally:
        _after_commit.reset(pending)
    if outer is not None:
        outer.extend(callbacks)


class Enclosing:
    """The one transaction of a request that commits as a whole (see ``enclosing_transaction``)."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.done = False
        self.committed = False
        self.committing = False

    def commit(self) -> None:
        """Run the commit steps, then commit everything written so far; its post-commit hooks run when the
        enclosing block ends.

        Raises the database error itself (an ``IntegrityError`` included) so the caller can tell a lost race
        for its own row from other failures; the transaction is rolled back in that case.
        """
        self.committing = True
        try:
            _run_commit_steps()
            db.session.commit()
        except BaseException:
            self.rollback()
            raise
        finally:
            self.committing = False
        self.done = self.committed = True

    def rollback(self) -> None:
        """Take back everything written so far (nothing of it ever becomes visible); its hooks are dropped."""
        db.session.rollback()
        self.callbacks.clear()
        self.done = True


@contextlib.contextmanager
def enclosing_transaction() -> Iterator[Enclosing]:
    """One writing transaction (``BEGIN IMMEDIATE`` on SQLite) around a whole request's work.

    The caller commits with ``Enclosing.commit()``; leaving the block without committing rolls everything
    back. ``unit_of_work()`` blocks inside become savepoints; ``after_commit`` hooks run once the block is
    left after a commit (outside it, so a hook may open units of work of its own).
    """
    if _enclosing.get() is not None:
        raise RuntimeError("enclosing transactions do not nest")
    db.session.commit()  # close any read-only transaction opened by authentication
    enclosing = Enclosing()
    intent = _write_intent.set(True)
    pending = _after_commit.set(enclosing.callbacks)
    token = _enclosing.set(enclosing)
    try:
        yield enclosing
    finally:
        try:
            if not enclosing.done:
                enclosing.rollback()
        finally:
            _enclosing.reset(token)
            _after_commit.reset(pending)
            _write_intent.reset(intent)
        if enclosing.committed:
            _run_callbacks(enclosing.callbacks)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back_hooks(session, previous_transaction) -> None:
    """A rollback of the whole enclosing transaction (not of a savepoint) drops the hooks registered so far."""
    enclosing = _enclosing.get()
    if (
        enclosing is not None
        and not enclosing.committed
        and previous_transaction.parent is None
        and not previous_transaction.nested
    ):
        enclosing.callbacks.clear()


@event.listens_for(Session, "before_commit")
def _refuse_a_commit_inside(session) -> None:
    """Inside an enclosing transaction only ``Enclosing.commit`` commits: a stray commit would make part of
    the work (and an unanswered Idempotency-Key) visible on its own, so it fails instead."""
    enclosing = _enclosing.get()
    if enclosing is not None and not enclosing.committing and not session.in_nested_transaction():
        raise RuntimeError("a commit inside a request that commits as a whole; use unit_of_work() instead")


@event.listens_for(Session, "before_commit")
def _refuse_unsealed_commit(session) -> None:
    """A guard, not the path: a commit that bypasses the unit of work while audit entries or outbox events
    are staged fails instead of committing the change without them (only the commit steps seal them)."""
    if session.in_nested_transaction():
        return
    unsealed = sorted(name for name, items in session.info.get(STAGED, {}).items() if items)
    if unsealed:
        raise RuntimeError(f"a commit outside unit_of_work() with {' and '.join(unsealed)} staged; use unit_of_work()")


@event.listens_for(Session, "after_transaction_end")
def _drop_staged(session, transaction) -> None:
    """What a transaction staged ends with it: when it ended without committing, it never happened."""
    if transaction.parent is None:
        session.info.pop(STAGED, None)
