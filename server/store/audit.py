"""The tamper-evident audit trail: a SHA-256 hash chain over canonical entries.

Each entry's hash covers the previous entry's hash and a canonical JSON of its own fields, so a changed
field, a deleted, inserted or reordered entry breaks the chain at that point. Appends lock the single
``audit_head`` row, so the chain never forks, also with several server processes on one PostgreSQL.
The entry of a refused request that the database cannot take right now waits in the audit spool
(``server.store.audit_spool``) and is chained at the next successful write or by the dispatcher's loop.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_string  # the C encoder json.dumps uses
from typing import Any

from flask import current_app, g, has_app_context, has_request_context
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from server.errors import Conflict
from server.store import audit_spool
from server.store.extensions import db
from server.store.models import AuditEntry, AuditHead, table_of, utcnow
from server.store.uow import after_commit, staged, take_staged

GENESIS = "0" * 64
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


def chain_staged() -> None:
    """The unit of work's commit step for the audit trail: chain the transaction's staged entries onto the tip.

    Everything else is flushed first; then the ``audit_head`` row is locked (an UPDATE, which serialises
    appenders on PostgreSQL and SQLite alike) and read, the entries get their places and hashes, and the head
    moves to the last of them, once. The lock is released by the commit that follows.
    """
    pending = take_staged(_STAGED)
    if not pending:
        return
    session = db.session
    session.flush()
    table = table_of(AuditHead)
    lock = update(table).where(table.c.id == 1).values(seq=table.c.seq).returning(table.c.seq, table.c.hash)
    tip = session.execute(lock).first()
    if tip is None:
        _create_head()
        tip = session.execute(lock).one()
    seq, last_hash = tip
    for entry in pending:
        seq += 1
        entry.seq, entry.prev_hash = seq, last_hash
        entry.hash = last_hash = entry_hash(entry_dict(entry))
    move = update(table).where(table.c.id == 1).values(seq=seq, hash=last_hash)
    if session.get_bind().dialect.name == "postgresql":
        # One statement: the head moves in a data-modifying WITH of the entries' INSERT (the entries stay
        # objects of their own, not of the session: they are never changed).
        entries = table_of(AuditEntry)
        rows = [{column.key: getattr(entry, column.key) for column in entries.columns} for entry in pending]
        session.execute(insert(entries).values(rows).add_cte(move.cte("moved_head")))
        return
    session.add_all(pending)
    session.flush()
    session.execute(move)


def _mark_request_audited() -> None:
    """Remember that this request committed an audit entry (a refused request then needs no second one)."""
    if has_request_context():
        g.audit_committed = True


def _create_head() -> None:
    """The chain's tip row, created once; two first appends at the same moment do not both create it."""
    dialect = db.session.get_bind().dialect.name
    values = {"id": 1, "seq": 0, "hash": GENESIS}
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(AuditHead).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(AuditHead).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        db.session.add(AuditHead(**values))
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
)
# Every column, in COLUMNS order, as the text the chain hashes (timestamp as _timestamp writes it, data undecoded).
_ROWS = {
    "sqlite": "SELECT seq, replace(at, ' ', 'T') || 'Z', actor, action, subject_type, subject_id, therapy_id, "
    "site_id, reason, CAST(data AS TEXT), prev_hash, hash FROM audit_entry WHERE seq > ? "
    "ORDER BY seq LIMIT ?",
    "postgresql": "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, action, "
    "subject_type, subject_id, therapy_id, site_id, reason, CAST(data AS TEXT), prev_hash, hash "
    "FROM audit_entry WHERE seq > %s ORDER BY seq LIMIT %s",
}


def _rows(batch: int) -> Iterator[Sequence[tuple]]:
    """The chain in ``seq`` order, ``batch`` rows at a time, straight from the driver (no ORM, no decoding)."""
    connection = db.session.connection()
    cursor = connection.connection.cursor()
    statement = _ROWS[connection.dialect.name]
    last = 0
    try:
        while True:
            cursor.execute(statement, (last, batch))
            rows = cursor.fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]
    finally:
        cursor.close()


def _quoted(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def stored_form(row: tuple) -> str:
    """What an entry's hash covers (prev_hash then canonical JSON), put together from its stored text.

    ``row`` holds the columns as ``_ROWS`` selects them; entries are stored canonically (``data`` with sorted
    keys and compact separators, the timestamp with microseconds), so nothing needs decoding.
    """
    seq, at, actor, action, subject_type, subject_id, therapy_id, site_id, reason, data, prev_hash, _digest = row
    return (
        f'{prev_hash}{{"action":{_quoted(action)},"actor":{_quoted(actor)},"at":"{at}","data":{data},'
        f'"prev_hash":"{prev_hash}","reason":{_quoted(reason)},"seq":{seq},'
        f'"site_id":{"null" if site_id is None else site_id},"subject_id":{_quoted(subject_id)},'
        f'"subject_type":{_quoted(subject_type)},"therapy_id":{_quoted(therapy_id)}}}'
    )


def _intact(row: tuple) -> bool:
    """Whether the row's hash is SHA-256 over its prev_hash and its canonical fields.

    The quick check hashes ``stored_form``; a row that fails it (stored differently, e.g. by an older
    version, or tampered with) is decoded and hashed exactly as ``entry_hash`` does before it counts as broken.
    """
    if hashlib.sha256(stored_form(row).encode()).hexdigest() == row[11]:
        return True
    entry = dict(zip(COLUMNS, row, strict=True))
    try:
        entry.update(at=datetime.fromisoformat(entry["at"]), data=json.loads(entry["data"]))
    except (TypeError, ValueError):
        return False
    return entry_hash(entry) == entry["hash"]


def verify(progress: Callable[[int], None] | None = None, batch: int = 20_000) -> dict[str, Any]:
    """Walk the whole chain in ``seq`` order; report how many entries were checked and the first bad one.

    ``progress`` is called with the number of entries checked so far after every ``batch`` of them. Memory
    stays flat however long the chain: one batch of rows is held at a time.
    """
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for rows in _rows(batch):
        for row in rows:
            if row[0] != expected_seq or row[10] != expected_prev or not _intact(row):
                return {"ok": False, "checked": checked, "first_bad_seq": min(row[0], expected_seq)}
            expected_prev, expected_seq, checked = row[11], expected_seq + 1, checked + 1
        if progress:
            progress(checked)
    head = db.session.get(AuditHead, 1)
    if head is not None and (head.seq != checked or head.hash != expected_prev):
        # The chain's tip disagrees with the entries: entries beyond it were added behind the server's back,
        # entries before it were removed from the end, or the last entry was rewritten with a fresh hash.
        if head.seq < checked:
            return {"ok": False, "checked": head.seq, "first_bad_seq": head.seq + 1}
        if head.seq > checked:
            return {"ok": False, "checked": checked, "first_bad_seq": checked + 1}
        return {"ok": False, "checked": checked - 1, "first_bad_seq": checked}
    # The last hash, recorded outside the database now and then, lets a later check show that nobody
    # rewrote the chain wholesale (recomputing every hash after a change).
    return {"ok": True, "checked": checked, "last_hash": expected_prev}
