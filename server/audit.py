"""The tamper-evident audit trail: a SHA-256 hash chain over canonical entries.

Each entry's hash covers the previous entry's hash and a canonical JSON of its own fields, so a changed
field, a deleted, inserted or reordered entry breaks the chain at that point. Appends lock the single
``audit_head`` row, so the chain never forks, also with several server processes on one PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db
from .models import AuditEntry, AuditHead, utcnow
from .uow import after_commit

GENESIS = "0" * 64


def _timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (the form hashed into the chain)."""
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(entry: dict[str, Any]) -> bytes:
    """The canonical bytes of an entry's fields (everything but its own hash)."""
    body = {
        "seq": entry["seq"], "at": _timestamp(entry["at"]), "actor": entry["actor"], "action": entry["action"],
        "subject_type": entry["subject_type"], "subject_id": entry["subject_id"],
        "therapy_id": entry.get("therapy_id"), "site_id": entry.get("site_id"), "reason": entry.get("reason"),
        "data": entry.get("data") or {}, "prev_hash": entry["prev_hash"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical entry."""
    return hashlib.sha256(entry["prev_hash"].encode() + canonical(entry)).hexdigest()


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def append(actor: str, action: str, subject_type: str, subject_id: str, *, data: dict | None = None,
           therapy_id: str | None = None, site_id: int | None = None, reason: str | None = None,
           at: datetime | None = None) -> AuditEntry:
    """Add one entry to the chain inside the current transaction."""
    session = db.session
    # Taking the row lock first (an UPDATE) serialises appends on PostgreSQL and SQLite alike.
    advance = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
    if session.execute(advance).rowcount == 0:
        _create_head()
        session.execute(advance)
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    session.refresh(head)
    fields = {
        "seq": head.seq, "at": at or utcnow(), "actor": actor, "action": action, "subject_type": subject_type,
        "subject_id": str(subject_id), "therapy_id": therapy_id, "site_id": site_id, "reason": reason,
        "data": _json_ready(data or {}), "prev_hash": head.hash,
    }
    fields["hash"] = entry_hash(fields)
    entry = AuditEntry(**fields)
    session.add(entry)
    head.hash = fields["hash"]
    session.flush()
    if has_request_context():
        after_commit(_mark_request_audited)
    return entry


def _mark_request_audited() -> None:
    """Remember that this request committed an audit entry (a refused request then needs no second one)."""
    if has_request_context():
        g.audit_committed = True


def _create_head() -> None:
    """The chain's tip row, created once; two first appends at the same moment do not both create it."""
    dialect = db.session.get_bind().dialect.name
    values = {"id": 1, "seq": 0, "hash": GENESIS}
    if dialect == "postgresql":
        statement = postgresql.insert(AuditHead).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(AuditHead).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        db.session.add(AuditHead(**values))
        db.session.flush()
        return
    db.session.execute(statement)


def audit_refusal(actor: str, action: str, subject_type: str, subject_id: str, *, status: int, code: str,
                   message: str, therapy_id: str | None = None, site_id: int | None = None,
                   data: dict | None = None) -> AuditEntry:
    """Audit a refused request that touched GMP data, in its own transaction, before the error is answered.

    ``action`` names what was refused and ends in ``.refused`` (``task.refused``, ``custody.refused``); the
    entry carries the HTTP status, the error code and message, and whatever ``data`` says about the attempt.
    A request that committed any audit entry (this one, a ``coi.mismatch``, a ``message.refused``) is not
    recorded a second time by the generic refusal audit of ``auth.require``.
    """
    from .uow import unit_of_work

    if not action.endswith(".refused"):
        raise ValueError(f"a refusal's action ends in '.refused', not '{action}'")
    with unit_of_work():
        entry = append(actor[:64], action, subject_type, str(subject_id)[:64], therapy_id=therapy_id,
                       site_id=site_id, data={"status": status, "code": code, "message": message,
                                              **(data or {})})
    return entry


def refusal_recorded() -> bool:
    """Whether this request already committed an audit entry (so its refusal is in the trail)."""
    return has_request_context() and bool(g.get("audit_committed"))



def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as plain fields (for hashing and for the API)."""
    return {
        "seq": entry.seq, "at": entry.at, "actor": entry.actor, "action": entry.action,
        "subject_type": entry.subject_type, "subject_id": entry.subject_id, "therapy_id": entry.therapy_id,
        "site_id": entry.site_id, "reason": entry.reason, "data": entry.data, "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _stream(batch: int = 5000) -> Iterator[dict[str, Any]]:
    table = AuditEntry.__table__
    names = ["seq", "at", "actor", "action", "subject_type", "subject_id", "therapy_id", "site_id", "reason",
             "data", "prev_hash", "hash"]
    columns = [table.c[name] for name in names]
    connection = db.session.connection()  # plain rows, no ORM bookkeeping: this loop sees every entry
    last = None
    while True:
        query = select(*columns).order_by(table.c.seq).limit(batch)
        if last is not None:
            query = query.where(table.c.seq > last)
        rows = connection.execute(query).all()
        if not rows:
            return
        for row in rows:
            yield dict(zip(names, row, strict=True))
        last = rows[-1][0]


def verify() -> dict[str, Any]:
    """Walk the whole chain in ``seq`` order; report how many entries were checked and the first bad one."""
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for entry in _stream():
        if entry["seq"] != expected_seq or entry["prev_hash"] != expected_prev or entry_hash(entry) != entry["hash"]:
            return {"ok": False, "checked": checked, "first_bad_seq": min(entry["seq"], expected_seq)}
        expected_prev, expected_seq, checked = entry["hash"], expected_seq + 1, checked + 1
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
