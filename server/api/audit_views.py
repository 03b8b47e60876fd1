"""The audit trail: list and verify."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import select

from server.access.auth import require, visible_site_ids
from server.clock import iso
from server.store import audit
from server.store.models import AuditEntry

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
    }


@bp.get("/audit")
@require()
def list_audit():
    """Audit entries in ``seq`` order; site staff see only entries of their sites' therapies."""
    query = select(AuditEntry).order_by(AuditEntry.seq)
    if request.args.get("therapy_id"):
        query = query.where(AuditEntry.therapy_id == request.args["therapy_id"])
    after_seq = whole_number("after_seq")
    if after_seq is not None:
        query = query.where(AuditEntry.seq > after_seq)
    sites = None if any(r in READ_ALL for r in g.user.roles) else visible_site_ids(g.user)
    if sites is not None:
        query = query.where(AuditEntry.site_id.in_(sites))
    return page(query, _item)


@bp.get("/audit/verify")
@require(*READ_ALL)
def verify_audit():
    """Check the whole chain; names the first broken entry."""
    return audit.verify()
