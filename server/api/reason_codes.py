"""Reason codes: why a therapy was cancelled, held, rescheduled or handed to another site."""

from __future__ import annotations

from flask import g, request

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import ReasonCodeSchema, load_json
from server.workflow import reason_codes

from . import bp


@bp.get("/reason-codes")
@require()
def list_reason_codes():
    """The active reason codes, of one ``kind`` (cancel, hold, reschedule, reassign) or all."""
    kind = request.args.get("kind") or None
    if kind is not None:
        reason_codes.check_kind(kind)
    return {"items": [reason_codes.item(r) for r in reason_codes.listed(kind)], "next_cursor": None}


@bp.post("/reason-codes")
@require(*usecases.AddReasonCode.ROLES)
@idempotent
def add_reason_code():
    """Add a reason code of a kind (admin); 409 when the kind has it already."""
    body = load_json(ReasonCodeSchema())
    row = usecases.add_reason_code(
        usecases.AddReasonCode(kind=body["kind"], code=body["code"], description=body["description"], by=g.user)
    )
    return reason_codes.item(row), 201
