"""The tamper-evident audit trail: SHA-256 hash chains over canonical entries, one per therapy, sealed together.

Each entry belongs to a chain: its therapy's, or ``"system"`` for entries without a therapy. Its hash covers
the previous entry's hash in that chain and a canonical JSON of its own fields (the chain and its place in it
included), so a changed field, a deleted, inserted or reordered entry breaks its chain at that point.
Appending locks only the chain's head row (``audit_chain_head``): completions of different therapies never
wait for one another, also with several server processes on one PostgreSQL. ``seq`` orders all entries; on
PostgreSQL it comes from a sequence (gaps are harmless and never read as deletions).

A seal (``seal``; ``tether audit seal`` and every ``TETHER_AUDIT_SEAL_SECONDS`` in ``tether serve``) commits a
Merkle root over the heads that moved since the previous seal and is chained to that seal by hash, so removing
a therapy's newest entries (even with its head row rewritten to match) is named by verification.

The entry of a refused request that the database cannot take right now waits in the audit spool
(``server.store.audit_spool``) and is chained at the next successful write or by the dispatcher's loop.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import itertools
import json
import logging
import os
import pickle
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app, g, has_app_context, has_request_context
from sqlalchemy import Integer, Table, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from server.errors import Conflict
from server.store import audit_scan, audit_spool
from server.store.audit_scan import stored_form
from server.store.extensions import compact_json, db
from server.store.models import AuditChainHead, AuditEntry, AuditSeal, AuditSealHead, table_of, utcnow
from server.store.uow import after_commit, staged, take_staged

GENESIS = "0" * 64
SYSTEM = "system"  # the chain of entries that belong to no therapy
log = logging.getLogger(__name__)


def _timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (the form hashed into the chain)."""
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(entry: dict[str, Any]) -> bytes:
    """The canonical bytes of an entry's fields (everything but its own hash)."""
    body = {
        "seq": entry["seq"],
        "at": _timestamp(entry["at"]),
        "actor": entry["actor"],
        "action": entry["action"],
        "subject_type": entry["subject_type"],
        "subject_id": entry["subject_id"],
        "therapy_id": entry.get("therapy_id"),
        "site_id": entry.get("site_id"),
        "reason": entry.get("reason"),
        "data": entry.get("data") or {},
        "prev_hash": entry["prev_hash"],
    }
    if entry.get("chain") is not None:  # entries written before chains existed have neither (their old form)
        body["chain"], body["chain_seq"] = entry["chain"], entry["chain_seq"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical entry."""
    return hashlib.sha256(entry["prev_hash"].encode() + canonical(entry)).hexdigest()


def _json_ready(value: Any) -> Any:
    """``value`` as plain JSON types with every object's keys in sorted order.

    Stored with the compact serializer (``server.store.extensions.compact_json``), the column then holds exactly the
    entry's canonical ``data`` text, which lets ``verify`` hash it without decoding it.
    """
    return json.loads(json.dumps(value, default=str, sort_keys=True))


_STAGED = "audit"  # the transaction's entries waiting to be chained (``uow.staged``)


def _now() -> datetime:
    """The server's clock (``server.clock``: real time, a fake one in tests and the demo's back-dated seeding)."""
    if has_app_context():
        from server.clock import clock

        return clock()()
    return utcnow()


def append(
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    data: dict | None = None,
    therapy_id: str | None = None,
    site_id: int | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Add one entry to the chain as part of the current transaction.

    The entry is staged in the transaction and chained by the unit of work's commit step (``chain_staged``):
    its ``seq``, ``prev_hash`` and ``hash`` are set then, so the chain's lock is held only while the entries
    are written, not for the whole transaction. An entry written while serving a request names the request's id
    in its data (``request_id``, as the response's ``X-Request-ID`` header and the log lines give it), so that the
    entry, the request and its log lines can be found from one another.
    """
    request_id = g.get("request_id") if has_request_context() else None
    if request_id and "request_id" not in (data or {}):
        data = {**(data or {}), "request_id": request_id}
    entry = AuditEntry(
        at=at or _now(),
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=str(subject_id),
        therapy_id=therapy_id,
        site_id=site_id,
        reason=reason,
        data=_json_ready(data or {}),
    )
    pending = staged(_STAGED)
    pending.append(entry)
    if len(pending) == 1:
        if has_request_context():
            after_commit(_mark_request_audited)
        if not _replaying.get() and has_app_context() and audit_spool.waiting(audit_spool.spool_path()):
            after_commit(_replay_after_commit)  # the database takes writes again: chain the spool next
    return entry


_CARRIED = "audit_carried"  # other INSERTs of the transaction that the entries' INSERT carries (PostgreSQL)


def carry(statement: Insert) -> None:
    """Write ``statement`` (an INSERT whose rows nothing reads back) at the commit step, on PostgreSQL as a
    data-modifying WITH of the audit entries' INSERT: one round trip for both. A transaction without entries
    executes it alone."""
    staged(_CARRIED).append(statement)


def chain_staged() -> None:
    """The unit of work's commit step for the audit trail: chain the transaction's staged entries onto their chains.

    Everything else is flushed first; then, chain by chain in one fixed order (so two transactions never wait
    for each other's heads), the chain's head row is locked (an UPDATE, which serialises appenders of that chain
    on PostgreSQL and SQLite alike) and read, the entries get their ``seq``, their place and hash, and the head
    moves to the last of them, once. The locks are released by the commit that follows. Appenders of different
    chains (different therapies) do not wait for one another on PostgreSQL.
    """
    pending, carried = take_staged(_STAGED), take_staged(_CARRIED)
    session = db.session
    if not pending:
        for statement in carried:
            session.execute(statement)
        return
    session.flush()
    by_chain: dict[str, list[AuditEntry]] = {}
    for entry in pending:
        by_chain.setdefault(entry.therapy_id or SYSTEM, []).append(entry)
    postgresql = session.get_bind().dialect.name == "postgresql"
    lock, move = _head_statements(postgresql)
    columns = [column.key for column in table_of(AuditEntry).columns]
    for chain in sorted(by_chain):
        entries = by_chain[chain]
        locking = {"b_chain": chain, **({"b_count": len(entries)} if postgresql else {})}
        tip = session.execute(lock, locking).first()
        if tip is None:
            _create_head(chain)
            tip = session.execute(lock, locking).one()
        place, last_hash, taken = tip
        numbers = sorted(taken) if postgresql else list(range(taken + 1, taken + 1 + len(entries)))
        for entry, seq in zip(entries, numbers, strict=True):
            place += 1
            entry.seq, entry.chain, entry.chain_seq, entry.prev_hash = seq, chain, place, last_hash
            entry.hash = last_hash = entry_hash(entry_dict(entry))
        # The entries are written as rows (Core), never as objects of the session: they are never changed.
        rows = [{key: getattr(entry, key) for key in columns} for entry in entries]
        moved = {"b_chain": chain, "b_place": place, "b_seq": numbers[-1], "b_hash": last_hash}
        if postgresql:
            # One statement: the head moves, and the carried INSERTs go in, in data-modifying WITHs of the entries'
            # INSERT, whose rows are one JSON parameter each, so that its text is the same from one commit to the
            # next (SQLAlchemy cannot cache a multi-row VALUES statement: it would be compiled at every commit).
            shaped = _pg_shaped(columns, rows, carried)
            if shaped is not None:
                session.connection().execute(shaped[0], {**shaped[1], **moved})
                carried = []
                continue
            entries_insert = insert(table_of(AuditEntry)).values(rows).add_cte(move.cte("moved_head"))
            for number, statement in enumerate(carried):
                entries_insert = entries_insert.add_cte(statement.cte(f"carried_{number}"))
            carried = []
            session.execute(entries_insert, moved)
            continue
        session.execute(_entries_insert(), rows)
        session.execute(move, moved)
    for statement in carried:  # not carried by an entries' INSERT (SQLite)
        session.execute(statement)


def _pg_shaped(columns: list[str], rows: list[dict], carried: list[Insert]) -> tuple[Any, dict[str, str]] | None:
    """The entries' INSERT on PostgreSQL with the head's move and the ``carried`` INSERTs as one statement of a
    fixed text (by the columns and tables it writes), and its parameters: each table's rows as one JSON document
    read with ``json_to_recordset``, each ``data`` value in it exactly as the compact JSON column stores it. None
    when a carried statement is not a plain multi-row INSERT (it is then written as SQLAlchemy renders it)."""
    shapes: list[tuple[Table, tuple[str, ...]]] = [(table_of(AuditEntry), tuple(columns))]
    documents = [_recordset_json(rows, columns)]
    for statement in carried:
        values = getattr(statement, "_multi_values", None)
        if not isinstance(statement.table, Table) or not values or len(values) != 1:
            return None
        carried_rows = values[0]
        keys = tuple(carried_rows[0])
        if any(tuple(row) != keys for row in carried_rows) or not all(key in statement.table.c for key in keys):
            return None
        shapes.append((statement.table, keys))
        documents.append(_recordset_json(carried_rows, keys))
    return _shaped_statement(tuple(shapes)), {f"rows_{number}": doc for number, doc in enumerate(documents)}


@functools.cache
def _shaped_statement(shapes: tuple[tuple[Table, tuple[str, ...]], ...]) -> Any:
    """``_pg_shaped``'s statement for the tables and columns it writes (the entries' first), built once per shape:
    the head's move (``_head_statements``' own, in PostgreSQL's words) and each table's ``json_to_recordset``
    INSERT."""
    named = PGDialect(paramstyle="named")  # PostgreSQL's SQL with :name parameters, as text() reads them
    move = str(_head_statements(True)[1].compile(dialect=named))
    recordsets = [_recordset_insert(table, keys, f"rows_{number}") for number, (table, keys) in enumerate(shapes)]
    ctes = [f"moved_head AS ({move})"] + [f"carried_{number} AS ({sql})" for number, sql in enumerate(recordsets[1:])]
    return text(f"WITH {', '.join(ctes)} {recordsets[0]}")


def _recordset_insert(table: Table, keys: Sequence[str], parameter: str) -> str:
    """``INSERT INTO table (keys) SELECT keys FROM json_to_recordset(:parameter)`` with each column's type."""
    dialect = postgresql.dialect()
    names = ", ".join(f'"{key}"' for key in keys)
    types = ", ".join(f'"{key}" {table.c[key].type.compile(dialect=dialect)}' for key in keys)
    rows = f"json_to_recordset(CAST(:{parameter} AS json)) AS r({types})"
    return f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {rows}"  # noqa: S608 - the table's own columns


def _recordset_json(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """``rows`` as one JSON array of objects for ``json_to_recordset``: times in ISO 8601 with their zone (UTC when
    they have none, as ``UtcDateTime`` stores them), everything else as the compact JSON columns write it."""

    def value(item: Any) -> Any:
        if isinstance(item, datetime):
            return (item if item.tzinfo is not None else item.replace(tzinfo=UTC)).isoformat()
        return item

    return compact_json([{key: value(row.get(key)) for key in keys} for row in rows])


@functools.cache
def _head_statements(postgresql: bool):
    """The chain head's lock (returning its place, its hash and the new entries' ``seq`` numbers, see
    ``_seq_numbers``) and its move, with the chain (``b_chain``), the entries' count (``b_count``) and the head's
    new place, ``seq`` and hash (``b_place``, ``b_seq``, ``b_hash``) given when they are executed; built once (a
    statement object caches its compiled form)."""
    table = table_of(AuditChainHead)
    at_chain = table.c.chain == bindparam("b_chain")
    lock = (
        update(table)
        .where(at_chain)
        .values(chain_seq=table.c.chain_seq)
        .returning(table.c.chain_seq, table.c.hash, _seq_numbers(bindparam("b_count", type_=Integer), postgresql))
    )
    move = (
        update(table)
        .where(at_chain)
        .values(chain_seq=bindparam("b_place"), seq=bindparam("b_seq"), hash=bindparam("b_hash"))
    )
    return lock, move


@functools.cache
def _entries_insert() -> Insert:
    """The entries' INSERT, executed with their rows (one batch); built once."""
    return insert(table_of(AuditEntry))


def _seq_numbers(count, postgresql: bool):
    """What the chain head's lock also returns, for ``count`` new ``seq`` numbers: on PostgreSQL that many from the
    ``audit_entry_seq`` sequence (no row is locked for them); on SQLite the highest number so far, the new ones
    following it (its single writer already holds the lock)."""
    if postgresql:
        numbers = select(func.array_agg(func.nextval("audit_entry_seq"))).select_from(func.generate_series(1, count))
        return numbers.scalar_subquery()
    return select(func.coalesce(func.max(AuditEntry.seq), 0)).scalar_subquery()


def _mark_request_audited() -> None:
    """Remember that this request committed an audit entry (a refused request then needs no second one)."""
    if has_request_context():
        g.audit_committed = True


def _create_head(chain: str) -> None:
    """A chain's head row, created at its first entry; two first appends at the same moment do not both create it."""
    dialect = db.session.get_bind().dialect.name
    values = {"chain": chain, "chain_seq": 0, "seq": 0, "hash": GENESIS, "sealed_seq": 0}
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(AuditChainHead).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(AuditChainHead).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        db.session.add(AuditChainHead(**values))
        db.session.flush()
        return
    db.session.execute(statement)


def audit_refusal(
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    status: int,
    code: str,
    message: str,
    therapy_id: str | None = None,
    site_id: int | None = None,
    data: dict | None = None,
) -> AuditEntry | None:
    """Audit a refused request that touched GMP data, in its own transaction, before the error is answered.

    ``action`` names what was refused and ends in ``.refused`` (``task.refused``, ``custody.refused``); the
    entry carries the HTTP status, the error code and message, and whatever ``data`` says about the attempt.
    A request that committed any audit entry (this one, a ``coi.mismatch``, a ``message.refused``) is not
    recorded a second time by the generic refusal audit of ``auth.require``.

    The write is tried ``TETHER_AUDIT_REFUSAL_ATTEMPTS`` times; when the database still does not take it
    (busy beyond its timeout, unreachable), the entry is kept in the audit spool (``server.store.audit_spool``),
    with the moment of the refusal and ``"spooled": true``, and chained by ``replay_spool`` once the
    database accepts writes again. Returns the entry, or None when it was spooled.
    """
    from server.store.uow import unit_of_work

    if not action.endswith(".refused"):
        raise ValueError(f"a refusal's action ends in '.refused', not '{action}'")
    fields: dict[str, Any] = {
        "actor": actor[:64],
        "action": action,
        "subject_type": subject_type,
        "subject_id": str(subject_id)[:64],
        "therapy_id": therapy_id,
        "site_id": site_id,
        "reason": None,
        "at": _now(),
        "data": {"status": status, "code": code, "message": message, **(data or {})},
    }
    attempts = max(1, int(current_app.config.get("AUDIT_REFUSAL_ATTEMPTS") or 1))
    for attempt in range(1, attempts + 1):
        try:
            with unit_of_work():
                return _append_fields(fields)
        except (Conflict, DBAPIError) as exc:
            log.warning("audit entry of a refused request not written (attempt %d of %d): %s", attempt, attempts, exc)
            if attempt < attempts:
                time.sleep(min(1.0, 0.05 * 2**attempt))
    audit_spool.keep(audit_spool.spool_path(), {**fields, "data": _json_ready({**fields["data"], "spooled": True})})
    log.warning(
        "audit entry of a refused request (%s by %s) kept in the audit spool until the database accepts writes",
        action,
        fields["actor"],
    )
    if has_request_context():
        g.audit_committed = True  # the refusal is recorded (in the spool): no second, generic entry
    return None


def _append_fields(fields: dict[str, Any]) -> AuditEntry:
    """``append`` with the fields of a spooled (or to be spooled) entry."""
    return append(
        fields["actor"],
        fields["action"],
        fields["subject_type"],
        fields["subject_id"],
        data=fields.get("data"),
        therapy_id=fields.get("therapy_id"),
        site_id=fields.get("site_id"),
        reason=fields.get("reason"),
        at=fields["at"],
    )


_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_audit_replaying", default=False)


def replay_spool() -> int:
    """Chain the entries waiting in the audit spool, in one transaction, and empty it; returns how many.

    Each keeps the moment it was refused at. An entry already in the chain (the process stopped between the
    commit and emptying the spool) is not appended twice. When the database still refuses the write, the
    error is raised and the spool stays as it was.
    """
    from server.store.uow import unit_of_work

    path = audit_spool.spool_path()
    if _replaying.get() or not audit_spool.waiting(path):
        return 0
    replaying = _replaying.set(True)
    try:
        with audit_spool.locked(path):
            added = 0
            entries = audit_spool.read(path)
            if entries:
                with unit_of_work():
                    for fields in entries:
                        if not _chained(fields):
                            _append_fields(fields)
                            added += 1
            audit_spool.clear(path)
    finally:
        _replaying.reset(replaying)
    if added:
        log.info("%d audit entries from the audit spool chained", added)
    return added


def _chained(fields: dict[str, Any]) -> bool:
    """Whether a spooled entry is in the chain already (same action, actor, subject and moment)."""
    return (
        db.session.execute(
            select(AuditEntry.seq)
            .where(
                AuditEntry.action == fields["action"],
                AuditEntry.actor == fields["actor"],
                AuditEntry.subject_id == fields["subject_id"],
                AuditEntry.at == fields["at"],
            )
            .limit(1)
        ).first()
        is not None
    )


def _replay_after_commit() -> None:
    """After a successful write, chain what waits in the spool, unless still inside an open transaction.

    ``after_commit`` runs a hook at once when no unit of work is open, and queues it otherwise; a probe
    tells the two apart, so the spool is replayed only between transactions (never inside one whose
    commit or rollback is still to come).
    """
    between_transactions: list[bool] = []
    after_commit(lambda: between_transactions.append(True))
    if not between_transactions or db.session().in_transaction():
        return
    try:
        replay_spool()
    except Exception:  # the spool is kept; the next write or the dispatcher tries again
        db.session.rollback()
        log.exception("could not chain the audit spool yet")


def refusal_recorded() -> bool:
    """Whether this request already committed an audit entry (so its refusal is in the trail)."""
    return has_request_context() and bool(g.get("audit_committed"))


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as plain fields (for hashing and for the API)."""
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "therapy_id": entry.therapy_id,
        "site_id": entry.site_id,
        "reason": entry.reason,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "chain": entry.chain,
        "chain_seq": entry.chain_seq,
    }


COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "therapy_id",
    "site_id",
    "reason",
    "data",
    "prev_hash",
    "hash",
    "chain",
    "chain_seq",
)


def _intact(row: tuple) -> bool:
    """Whether the row's hash is SHA-256 over its prev_hash and its canonical fields.

    The quick check hashes ``stored_form``; a row that fails it (stored differently, e.g. by an older
    version, or tampered with) is decoded and hashed exactly as ``entry_hash`` does before it counts as broken.
    """
    return hashlib.sha256(stored_form(row).encode()).hexdigest() == row[11] or exact_intact(row)


def exact_intact(row: tuple) -> bool:
    """Whether the row's hash is right when its fields are decoded and hashed exactly as ``entry_hash`` does."""
    entry = dict(zip(COLUMNS, row, strict=False))  # a row without chain columns is an entry of the old form
    try:
        entry.update(at=datetime.fromisoformat(entry["at"]), data=json.loads(entry["data"]))
    except (TypeError, ValueError):
        return False
    return entry_hash(entry) == entry["hash"]


# -- seals --------------------------------------------------------------------------------------------------
def _leaf(chain: str, chain_seq: int, seq: int, digest: str) -> bytes:
    """The Merkle leaf of one chain head: its chain, place, ``seq`` and hash (0x00-prefixed, as RFC 6962)."""
    return hashlib.sha256(b"\x00" + f"{chain}\n{chain_seq}\n{seq}\n{digest}".encode()).digest()


def merkle_root(heads: Sequence[tuple[str, int, int, str]]) -> str:
    """The Merkle root (hex) over chain heads ``(chain, chain_seq, seq, hash)`` in chain order.

    Leaves are paired left to right (inner nodes 0x01-prefixed), an odd last node moves up a level as it is;
    no heads give ``GENESIS``.
    """
    level = [_leaf(*head) for head in sorted(heads)]
    if not level:
        return GENESIS
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + level[-1:] if len(level) % 2 else paired
    return level[0].hex()


def seal_hash(number: int, at: datetime, heads: int, root: str, prev_hash: str) -> str:
    """SHA-256 over the previous seal's hash and the seal's canonical JSON (number, moment, heads, root)."""
    body = {"id": number, "at": _timestamp(at), "heads": heads, "root": root, "prev_hash": prev_hash}
    text_of = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(prev_hash.encode() + text_of.encode()).hexdigest()


def seal() -> dict[str, Any] | None:
    """Seal the chain heads that moved since the last seal, in a transaction of its own; None when none moved.

    The seal row holds the Merkle root over those heads and is chained by hash to the previous seal; each head it
    covers is kept with it (``audit_seal_head``) and marked sealed on its chain's head row. Two processes sealing
    at once cannot both take the next number: the second one's transaction is refused and it returns None.
    """
    session = db.session
    session.commit()  # a fresh transaction, nothing of the caller's in it
    table = table_of(AuditChainHead)
    moved = [
        tuple(row)
        for row in session.execute(
            select(table.c.chain, table.c.chain_seq, table.c.seq, table.c.hash)
            .where(table.c.chain_seq > table.c.sealed_seq)
            .order_by(table.c.chain)
        )
    ]
    if not moved:
        session.rollback()
        return None
    last = session.execute(select(AuditSeal.id, AuditSeal.hash).order_by(AuditSeal.id.desc()).limit(1)).first()
    number, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at, root = _now(), merkle_root(moved)
    digest = seal_hash(number, at, len(moved), root, prev_hash)
    try:
        session.add(AuditSeal(id=number, at=at, heads=len(moved), root=root, prev_hash=prev_hash, hash=digest))
        session.flush()
        # The seal's heads and the heads' marks, each one batched statement (executemany), not one per head.
        session.execute(
            insert(table_of(AuditSealHead)),
            [
                {"seal_id": number, "chain": chain, "chain_seq": place, "seq": seq, "hash": head_hash}
                for chain, place, seq, head_hash in moved
            ],
        )
        session.execute(
            update(table)
            .where(table.c.chain == bindparam("head_chain"), table.c.sealed_seq < bindparam("place"))
            .values(sealed_seq=bindparam("place")),
            [{"head_chain": chain, "place": place} for chain, place, _seq, _hash in moved],
        )
        session.commit()
    except DBAPIError as exc:
        session.rollback()
        log.warning("audit seal %d not written (another process sealed first?): %s", number, exc)
        return None
    log.info("audit seal %d: %d chain heads, root %s", number, len(moved), root)
    return {"seal": number, "heads": len(moved), "root": root, "hash": digest}


def _verify_seals() -> tuple[int, dict[str, tuple[int, int, str]], int | None]:
    """(seals checked, the last sealed head of each chain up to the last intact seal, the first broken seal or None).

    A seal is intact when its number follows the previous one, it links to the previous seal's hash, its hash is
    right and its root is the Merkle root of the heads kept with it.
    """
    session = db.session
    # The seals first, then only their heads: a seal written meanwhile is left to the next verification.
    seals = session.execute(
        select(
            AuditSeal.id, AuditSeal.at, AuditSeal.heads, AuditSeal.root, AuditSeal.prev_hash, AuditSeal.hash
        ).order_by(AuditSeal.id)
    ).all()
    kept = table_of(AuditSealHead)
    heads = session.execute(
        select(kept.c.seal_id, kept.c.chain, kept.c.chain_seq, kept.c.seq, kept.c.hash)
        .where(kept.c.seal_id <= (seals[-1][0] if seals else 0))
        .order_by(kept.c.seal_id, kept.c.chain)
        .execution_options(yield_per=20_000)
    )
    pending = next(heads, None)
    sealed: dict[str, tuple[int, int, str]] = {}
    prev_hash, checked = GENESIS, 0
    for number, at, count, root, seal_prev, digest in seals:
        group: list[tuple[str, int, int, str]] = []
        while pending is not None and pending[0] <= number:
            if pending[0] == number:
                group.append((pending[1], pending[2], pending[3], pending[4]))
            pending = next(heads, None)
        if (
            number != checked + 1
            or seal_prev != prev_hash
            or count != len(group)
            or merkle_root(group) != root
            or seal_hash(number, at, count, root, seal_prev) != digest
        ):
            heads.close()
            return checked, sealed, min(number, checked + 1)
        for chain, place, seq, head_hash in group:
            sealed[chain] = (place, seq, head_hash)
        prev_hash, checked = digest, checked + 1
    heads.close()
    if pending is not None:  # heads kept for a seal that is not there
        return checked, sealed, checked + 1
    return checked, sealed, None


# -- verification -------------------------------------------------------------------------------------------
class _Chain:
    """How far one chain has been verified (its last intact entry's place, ``seq`` and hash, whether that entry is of
    the old form) and whether it broke, as the ranges of the trail are stitched together in order."""

    __slots__ = ("bad", "hash", "legacy", "place", "seq")

    def __init__(self) -> None:
        self.place, self.seq, self.hash, self.legacy, self.bad = 0, 0, GENESIS, True, False


def _bounds(
    heads: dict[str, tuple[int, int, str]], sealed: dict[str, tuple[int, int, str]]
) -> dict[str, tuple[int, tuple[int, int, str] | None]]:
    """Each chain's bound (its head as first read, or its last seal's place when further) and last sealed head."""
    bounds = {}
    for chain in set(heads) | set(sealed):
        head, seal_head = heads.get(chain), sealed.get(chain)
        bounds[chain] = (max(head[0] if head else 0, seal_head[0] if seal_head else 0), seal_head)
    return bounds


def _ranges(batch: int) -> list[tuple[int, int]]:
    """The ``seq`` ranges (after, upto] to check side by side: one per worker process when the trail has at least
    ``AUDIT_VERIFY_PARALLEL_FROM`` entries, else the whole trail (checked in this process)."""
    whole = [(0, audit_scan.LAST_SEQ)]
    config = current_app.config
    workers = int(config.get("AUDIT_VERIFY_WORKERS") or 0) or (os.cpu_count() or 1)
    if workers < 2 or db.engine.dialect.name not in audit_scan.ROWS or not _file_or_server(db.engine.url):
        return whole
    # Two subqueries: SQLite reads the first and the last key of the index only for a lone min() or max().
    first, last = select(func.min(AuditEntry.seq)).scalar_subquery(), select(func.max(AuditEntry.seq)).scalar_subquery()
    low, high = db.session.execute(select(first, last)).one()
    if low is None or high - low + 1 < int(config.get("AUDIT_VERIFY_PARALLEL_FROM", 100_000)):
        return whole
    workers = min(workers, high - low + 1)
    cuts = [0] + [low - 1 + (high - low + 1) * part // workers for part in range(1, workers)] + [audit_scan.LAST_SEQ]
    return list(itertools.pairwise(cuts))


def _file_or_server(url: Any) -> bool:
    """Whether another process can open the database: a server's, or a SQLite file (not one in memory)."""
    return url.get_backend_name() != "sqlite" or bool(url.database) and url.database != ":memory:"


def _scan_here(
    bounds: dict[str, tuple[int, tuple[int, int, str] | None]],
    progress: Callable[[int], None] | None,
    batch: int,
    after: int = 0,
    upto: int = audit_scan.LAST_SEQ,
) -> dict[str, tuple]:
    """The trail (the entries with ``after < seq <= upto``) checked in this process, on the session's connection."""
    connection = db.session.connection()
    dialect = connection.dialect.name
    cursor = connection.connection.cursor()
    scan = audit_scan.Scan(bounds, exact_intact)
    read = 0
    try:
        rows = audit_scan.batches(cursor, audit_scan.ROWS[dialect], after, upto, batch, audit_scan.READ_AHEAD[dialect])
        for got in rows:
            scan.rows(got)
            read += len(got)
            if progress:
                progress(read)
    finally:
        cursor.close()
    return scan.result()


def _scan_apart(
    ranges: list[tuple[int, int]],
    bounds: dict[str, tuple[int, tuple[int, int, str] | None]],
    progress: Callable[[int], None] | None,
    batch: int,
) -> list[dict[str, tuple]]:
    """Each range checked in a worker process of its own (a fresh interpreter running ``audit_scan``: nothing of
    this process, its threads or its connections, is forked), in order."""
    engine = db.engine
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs.pop("context", None)  # SQLAlchemy's adapters: the worker reads text and numbers only
    common = {"dialect": engine.dialect.name, "args": list(args), "kwargs": kwargs, "batch": batch}
    common.update(bounds=bounds, exact=f"{__name__}:exact_intact", paths=[path for path in sys.path if path])
    script = str(Path(audit_scan.__file__).resolve())
    # Each worker in a session of its own: where the kernel shares the processors between sessions (Linux's
    # autogroup), the workers then get a share each, as one pass would get one, instead of splitting this one.
    workers: list[subprocess.Popen] = []
    try:
        for _ in ranges:  # all started before any is handed its job, so that they start up side by side
            workers.append(
                subprocess.Popen(  # noqa: S603 (this interpreter running our own module)
                    [sys.executable, "-I", script],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    start_new_session=True,
                )
            )
        for worker, (after, upto) in zip(workers, ranges, strict=True):
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(pickle.dumps({**common, "after": after, "upto": upto}, pickle.HIGHEST_PROTOCOL))
            worker.stdin.close()
        return _results(workers, progress)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            for pipe in (worker.stdin, worker.stdout):
                if pipe is not None:
                    pipe.close()


def _results(workers: list[subprocess.Popen], progress: Callable[[int], None] | None) -> list[dict[str, tuple]]:
    """The workers' results in their order, reporting the entries read by all of them as they go."""
    results: list[dict[str, tuple] | None] = [None] * len(workers)
    read = [0] * len(workers)
    with selectors.DefaultSelector() as waiting:
        for number, worker in enumerate(workers):
            assert worker.stdout is not None
            waiting.register(worker.stdout, selectors.EVENT_READ, number)
        while waiting.get_map():
            for key, _events in waiting.select():
                number = key.data
                frame = audit_scan.read_frame(functools.partial(_read_exactly, key.fd))
                if frame is None or frame[0] == b"e":
                    told = frame[2].decode(errors="replace") if frame else "it ended without an answer"
                    raise RuntimeError(f"audit verification worker {number + 1} of {len(workers)} failed: {told}")
                kind, count, payload = frame
                read[number] = count
                if kind == b"r":
                    results[number] = pickle.loads(payload)  # noqa: S301 (our own worker's answer)
                    waiting.unregister(key.fileobj)
                elif progress:
                    progress(sum(read))
    return [result for result in results if result is not None]


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from a pipe (fewer at its end)."""
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _stitch(
    segments: list[dict[str, tuple]],
) -> tuple[dict[str, _Chain], dict[str, tuple[int, int]], dict[str, list[tuple[int, int]]]]:
    """The ranges' chains joined in order: each range's first entry of a chain must follow the last intact entry of
    that chain before it (next place, linked by hash, not of the old form after one of the new).

    Returns every chain's state, the first bad entry (seq, place) of each broken chain, in the order one pass
    in ``seq`` order would find them, and the (place, seq) of entries past a chain's bound.
    """
    chains: dict[str, _Chain] = {}
    beyond: dict[str, list[tuple[int, int]]] = {}
    found: list[tuple[int, str, tuple[str, int, int, int]]] = []  # (seq that showed it, chain, the break)
    for segment in segments:
        for chain, (first, last, broken, past) in segment.items():
            state = chains.get(chain)
            if state is None:
                state = chains[chain] = _Chain()
            if past:
                beyond.setdefault(chain, []).extend(past)
            if state.bad or first is None:
                continue
            place, seq, prev_hash, legacy, ok = first
            if place > state.place + 1:  # entries of the chain are missing before this one
                found.append((seq, chain, ("gap", state.seq, seq, state.place + 1)))
            elif place < state.place + 1 or (legacy and not state.legacy) or prev_hash != state.hash or not ok:
                found.append((seq, chain, ("at", seq, place, 0)))
            else:
                state.place, state.seq, state.hash, state.legacy = last
                if broken is None:
                    continue
                found.append((broken[0], chain, broken[1:]))
            state.bad = True
    bad: dict[str, tuple[int, int]] = {}
    for _seen, chain, (kind, one, two, three) in sorted(found):
        # a gap: (the last intact seq, the seq after the gap, the first missing place); else (seq, place, 0)
        bad[chain] = (_first_absent(one, two), three) if kind == "gap" else (one, two)
    return chains, bad, beyond


def _heads(fresh: bool = False) -> dict[str, tuple[int, int, str]]:
    """Every chain's head: chain -> (chain_seq, seq, hash); ``fresh``: as committed now, read on a connection of
    its own (the session's transaction may still see an older state of SQLite than the worker processes saw)."""
    table = table_of(AuditChainHead)
    statement = select(table.c.chain, table.c.chain_seq, table.c.seq, table.c.hash)
    if fresh:
        with db.engine.connect() as connection:
            return {chain: (place, seq, digest) for chain, place, seq, digest in connection.execute(statement)}
    return {chain: (place, seq, digest) for chain, place, seq, digest in db.session.execute(statement)}


def _first_absent(after: int, until: int) -> int:
    """The first ``seq`` in (after, until] that no entry has: where entries were removed between two known ones
    of a chain (``until`` itself when none is missing there, i.e. the entry at ``until`` was moved)."""
    session = db.session
    if after + 1 <= until and session.get(AuditEntry, after + 1) is None:
        return after + 1
    found = session.execute(
        text(
            "SELECT min(a.seq) + 1 FROM audit_entry a WHERE a.seq > :after AND a.seq < :until "
            "AND NOT EXISTS (SELECT 1 FROM audit_entry b WHERE b.seq = a.seq + 1)"
        ),
        {"after": after, "until": until},
    ).scalar()
    return int(found) if found is not None and found <= until else until


def _seq_at(chain: str, place: int) -> int | None:
    """The ``seq`` of the entry at ``place`` in ``chain``, if there is one."""
    if chain == SYSTEM:
        legacy = db.session.execute(
            select(AuditEntry.seq).where(AuditEntry.chain.is_(None), AuditEntry.seq == place)
        ).scalar()
        if legacy is not None:
            return int(legacy)
    found = db.session.execute(
        select(AuditEntry.seq).where(AuditEntry.chain == chain, AuditEntry.chain_seq == place)
    ).scalar()
    return None if found is None else int(found)


def verify(progress: Callable[[int], None] | None = None, batch: int = 20_000) -> dict[str, Any]:
    """Verify every chain, every seal, and that every head and sealed head is there; name the first bad entry.

    The seals and the heads are read first: entries appended while verification runs lie beyond them and are left to the
    next verification (unless no head ever covers them: then they were added behind the server's back). The entries
    are read in ``seq`` order, each checked against the previous one of its chain, so the chains are verified side by
    side and memory stays flat (one batch of rows and one small record per chain). A trail of at least
    ``AUDIT_VERIFY_PARALLEL_FROM`` entries is split into contiguous ``seq`` ranges checked at once, one per worker
    process (``AUDIT_VERIFY_WORKERS``, by default one per CPU), and the ranges' chains are stitched together in
    order: the answer is the one a single pass gives. ``progress`` is called with the number of entries read so far
    after every ``batch`` of them (by any of the workers).

    The answer: ``ok``, ``checked`` (entries verified; when broken, the entries before the first bad one),
    ``chains``, ``seals``; when intact ``last_hash`` (the Merkle root over all chain heads as verified) and
    ``last_seal`` (the latest seal's number and hash, to record outside the database); when broken
    ``first_bad_seq`` with ``first_bad_chain`` and ``first_bad_chain_seq`` (the bad entry's chain and place),
    and ``first_bad_seal`` when a seal itself was altered; in both, ``spooled``: the entries of refused requests
    still waiting in this server's audit spool for a busy database (chained at the next write, not yet verifiable).
    """
    # Seals first, then heads: a head read later is never behind a seal read earlier, unless it was moved back.
    seals, sealed, bad_seal = _verify_seals()
    heads = _heads()
    bounds = _bounds(heads, sealed)
    ranges = _ranges(batch)
    segments = None
    if len(ranges) > 1:
        try:
            segments = _scan_apart(ranges, bounds, progress, batch)
        except OSError as exc:  # no worker could be started (no interpreter to run): one pass here instead
            log.warning("audit verification in one pass: its worker processes could not start: %s", exc)
    if segments is None:
        segments = [_scan_here(bounds, progress, batch)]
    chains, bad, beyond = _stitch(segments)
    _check_tails(heads, sealed, chains, bad)
    _check_beyond(beyond, bad)
    checked = sum(state.place for name, state in chains.items() if name not in bad)
    chains = {name: state for name, state in chains.items() if state.place}  # not those only seen beyond their heads
    if bad or bad_seal is not None:
        answer: dict[str, Any] = {"ok": False, "chains": len(set(heads) | set(chains)), "seals": seals}
        if bad:
            chain, (first, place) = min(bad.items(), key=lambda item: item[1])
            answer.update(first_bad_seq=first, first_bad_chain=chain, first_bad_chain_seq=place)
            answer["checked"] = db.session.execute(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.seq < first)
            ).scalar_one()
        else:
            answer["checked"] = checked
        if bad_seal is not None:
            answer["first_bad_seal"] = bad_seal
        answer["spooled"] = spooled()
        return answer
    # The last hash, recorded outside the database now and then, lets a later check show that nobody rewrote the
    # trail wholesale (recomputing every hash after a change); the seals keep such roots inside the database.
    last_hash = merkle_root([(name, state.place, state.seq, state.hash) for name, state in chains.items()])
    answer = {"ok": True, "checked": checked, "last_hash": last_hash, "chains": len(chains), "seals": seals}
    if seals:  # what to record outside the database: a later trail must still hold this seal with this hash
        latest = db.session.get(AuditSeal, seals)
        answer["last_seal"] = {"id": seals, "hash": latest.hash if latest else None}
    answer["spooled"] = spooled()
    return answer


def spooled() -> int:
    """How many audit entries wait in this server's spool (refusals kept while the database was busy)."""
    path = audit_spool.spool_path()
    if not audit_spool.waiting(path):
        return 0
    with audit_spool.locked(path):
        return len(audit_spool.read(path))


def _check_tails(
    heads: dict[str, tuple[int, int, str]],
    sealed: dict[str, tuple[int, int, str]],
    chains: dict[str, _Chain],
    bad: dict[str, tuple[int, int]],
) -> None:
    """Each chain must reach its head and its last seal, and end in the entry they name."""
    for chain in set(heads) | set(sealed):
        if chain in bad:
            continue
        state = chains.get(chain) or _Chain()
        head = heads.get(chain, (0, 0, GENESIS))
        sealed_head = sealed.get(chain, (0, 0, GENESIS))
        last = head if head[0] >= sealed_head[0] else sealed_head
        if state.place < last[0]:  # the newest entries were removed
            bad[chain] = (_first_absent(state.seq, last[1]), state.place + 1)
        elif head[0] < state.place:  # the head was moved back behind entries a seal covers
            bad[chain] = (_seq_at(chain, head[0] + 1) or state.seq, head[0] + 1)
        elif (state.seq, state.hash) != (head[1], head[2]):  # the last entry was rewritten with a fresh hash
            bad[chain] = (state.seq, state.place)


def _check_beyond(beyond: dict[str, list[tuple[int, int]]], bad: dict[str, tuple[int, int]]) -> None:
    """Entries past a chain's head as first read must be covered by its head now (appended meanwhile)."""
    if not beyond:
        return
    now = _heads(fresh=True)
    for chain, entries in beyond.items():
        if chain in bad:
            continue
        covered = now.get(chain, (0, 0, GENESIS))[0]
        past = [(seq, place) for place, seq in entries if place > covered]
        if past:
            bad[chain] = min(past)


def heads_summary() -> dict[str, Any] | None:
    """What the chain heads say without verifying: how many entries and chains, and the latest seal; None before
    the first entry."""
    entries, chains = db.session.execute(
        select(func.coalesce(func.sum(AuditChainHead.chain_seq), 0), func.count()).select_from(AuditChainHead)
    ).one()
    if not chains:
        return None
    latest = db.session.execute(select(AuditSeal).order_by(AuditSeal.id.desc()).limit(1)).scalar()
    return {"entries": int(entries), "chains": int(chains), "seal": latest}
