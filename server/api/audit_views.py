"""The audit trail: list and verify."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import or_, select

from server.access.auth import require, visible_site_ids
from server.clock import iso
from server.integration import outbox
from server.store import audit
from server.store.extensions import db
from server.store.models import AuditEntry, TherapyParty

from . import bp
from .filters import whole_number
from .paging import page

READ_ALL = ("auditor", "qa", "admin")


def _item(entry: AuditEntry) -> dict:
    return {
        "seq": entry.seq,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "therapy_id": entry.therapy_id,
        "reason": entry.reason,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        # Entries from before chains existed are the start of the "system" chain, at the place their seq gives.
        "chain": entry.chain or audit.SYSTEM,
        "chain_seq": entry.seq if entry.chain is None else entry.chain_seq,
    }


@bp.get("/audit")
@require()
def list_audit():
    """Audit entries in ``seq`` order; site staff see only the entries of their sites and of the therapies their
    sites take part in (any party); the patient reference is withheld from a caller who may not know it."""
    query = select(AuditEntry).order_by(AuditEntry.seq)
    if request.args.get("therapy_id"):
        query = query.where(AuditEntry.therapy_id == request.args["therapy_id"])
    after_seq = whole_number("after_seq")
    if after_seq is not None:
        query = query.where(AuditEntry.seq > after_seq)
    sites = None if any(r in READ_ALL for r in g.user.roles) else visible_site_ids(g.user)
    if sites is not None:
        taking_part = select(TherapyParty.therapy_id).where(TherapyParty.site_id.in_(sites))
        query = query.where(or_(AuditEntry.site_id.in_(sites), AuditEntry.therapy_id.in_(taking_part)))
    answer = page(query, _item)
    reader = outbox.Reader.user(g.user)
    audience = outbox.audiences(db.session, (item["therapy_id"] for item in answer["items"]))
    answer["items"] = [reader.view(item, audience.get(item["therapy_id"] or "")) for item in answer["items"]]
    return answer


@bp.get("/audit/verify")
@require(*READ_ALL)
def verify_audit():
    """Check every chain and seal; names the first broken entry (or seal)."""
    return audit.verify()
