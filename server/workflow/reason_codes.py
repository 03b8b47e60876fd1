"""Reason codes: why a therapy was cancelled, held, rescheduled or handed to another site, as master data.

Each kind (``cancel``, ``hold``, ``reschedule``, ``reassign``) has its own codes; a fresh install has a starting
set (migration 0006), an administrator adds more. ``OTHER`` of any kind needs a free-text reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.errors import Conflict, Invalid, NotFound
from server.store import audit
from server.store.extensions import db
from server.store.models import REASON_KINDS, ReasonCode
from server.store.uow import unit_of_work

OTHER = "OTHER"


def checked(kind: str, code: Any, reason: Any) -> tuple[str, str | None]:
    """``(code, reason)`` when ``code`` is an active code of ``kind`` (and ``OTHER`` comes with a reason);
    422 ``unknown_reason_code`` or ``reason_required`` otherwise."""
    text = reason.strip() if isinstance(reason, str) and reason.strip() else None
    found = db.session.get(ReasonCode, (kind, code.strip().upper())) if isinstance(code, str) and code.strip() else None
    if found is None or not found.active:
        raise Invalid(
            f"'{code}' is not a reason code for {kind}; GET /api/v1/reason-codes?kind={kind} lists them.",
            code="unknown_reason_code",
            details={"field": "reason_code", "kind": kind},
        )
    if found.code == OTHER and text is None:
        raise Invalid(
            "With the reason code OTHER, say the reason in 'reason'.",
            code="reason_required",
            details={"field": "reason"},
        )
    return found.code, text


def listed(kind: str | None = None) -> list[ReasonCode]:
    """The active codes (of ``kind``), by kind and code."""
    query = select(ReasonCode).where(ReasonCode.active.is_(True)).order_by(ReasonCode.kind, ReasonCode.code)
    if kind is not None:
        query = query.where(ReasonCode.kind == kind)
    return list(db.session.execute(query).scalars())


def every(kind: str | None = None) -> list[ReasonCode]:
    """Every code (of ``kind``), retired ones too, by kind and code: what an administrator manages."""
    query = select(ReasonCode).order_by(ReasonCode.kind, ReasonCode.code)
    if kind is not None:
        query = query.where(ReasonCode.kind == kind)
    return list(db.session.execute(query).scalars())


def check_kind(kind: Any) -> str:
    """``kind`` when it is one of the reason kinds; 422 naming them otherwise."""
    if kind not in REASON_KINDS:
        raise Invalid(
            f"kind must be one of {', '.join(REASON_KINDS)}.", code="invalid_request", details={"field": "kind"}
        )
    return kind


def add(kind: str, code: str, description: str, actor: str) -> ReasonCode:
    """Add a code of ``kind`` (audited); 409 ``reason_code_exists`` when the kind has it already."""
    kind = check_kind(kind)
    code = code.strip().upper()
    with unit_of_work():
        if db.session.get(ReasonCode, (kind, code)) is not None:
            raise Conflict(
                f"The {kind} reason code {code} exists already.",
                code="reason_code_exists",
                details={"kind": kind, "code": code},
            )
        row = ReasonCode(kind=kind, code=code, description=description.strip(), active=True, created_by=actor)
        db.session.add(row)
        audit.append(actor, "reason_code.added", "reason_code", f"{kind}:{code}", data={"description": row.description})
    return row


def change(kind: str, code: str, description: str | None, active: bool | None, actor: str) -> ReasonCode:
    """Change a code's description or retire it (``active`` false: no longer offered or accepted; what was
    recorded with it stays); audited with old and new values. 404 for an unknown code."""
    row = db.session.get(ReasonCode, (check_kind(kind), code.strip().upper()))
    if row is None:
        raise NotFound(f"No {kind} reason code {code}.", details={"kind": kind, "code": code})
    with unit_of_work():
        before = {"description": row.description, "active": row.active}
        if description is not None:
            row.description = description.strip()
        if active is not None:
            row.active = active
        after = {"description": row.description, "active": row.active}
        audit.append(
            actor, "reason_code.changed", "reason_code", f"{row.kind}:{row.code}", data={"from": before, "to": after}
        )
    return row


def item(row: ReasonCode) -> dict:
    """A reason code as the API shows it."""
    return {"code": row.code, "kind": row.kind, "description": row.description, "active": row.active}
