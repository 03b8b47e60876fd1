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

from sqlalchemy import select, update

from .extensions import db
from .models import AuditEntry, AuditHead, utcnow

GENESIS = "0" * 64


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    result = session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1))
    if result.rowcount == 0:
        session.add(AuditHead(id=1, seq=1, hash=GENESIS))
        session.flush()
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
    return entry


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as plain fields (for hashing and for the API)."""
    return {
        "seq": entry.seq, "at": entry.at, "actor": entry.actor, "action": entry.action,
        "subject_type": entry.subject_type, "subject_id": entry.subject_id, "therapy_id": entry.therapy_id,
        "site_id": entry.site_id, "reason": entry.reason, "data": entry.data, "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _stream(batch: int = 5000) -> Iterator[dict[str, Any]]:
    columns = [AuditEntry.seq, AuditEntry.at, AuditEntry.actor, AuditEntry.action, AuditEntry.subject_type,
               AuditEntry.subject_id, AuditEntry.therapy_id, AuditEntry.site_id, AuditEntry.reason,
               AuditEntry.data, AuditEntry.prev_hash, AuditEntry.hash]
    names = [c.key for c in columns]
    last = None
    while True:
        query = select(*columns).order_by(AuditEntry.seq).limit(batch)
        if last is not None:
            query = query.where(AuditEntry.seq > last)
        rows = db.session.execute(query).all()
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
        return {"ok": False, "checked": checked, "first_bad_seq": checked + 1}
    return {"ok": True, "checked": checked}
