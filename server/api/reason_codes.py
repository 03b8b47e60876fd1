"""Reason codes: why a therapy was cancelled, held, rescheduled or handed to another site."""

from __future__ import annotations

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import ReasonCodeSchema, load_json
from server.workflow import reason_codes

from . import bp


@bp.get("/reason-codes")
@require()
def list_reason_codes():
    """The active reason codes, of one ``kind`` (cancel, hold, reschedule, reassign) or all; ``all=true`` adds
    the retired ones."""
    kind = request.args.get("kind") or None
    if kind is not None:
        reason_codes.check_kind(kind)
    rows = reason_codes.every(kind) if request.args.get("all") == "true" else reason_codes.listed(kind)
    return {"items": [reason_codes.item(r) for r in rows], "next_cursor": None}


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


class ReasonCodeChangeSchema(Schema):
    """PATCH /reason-codes/{kind}/{code}."""

    class Meta:
        unknown = RAISE

    description = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
    active = fields.Boolean(load_default=None)


@bp.patch("/reason-codes/<kind>/<code>")
@require(*usecases.ChangeReasonCode.ROLES)
@idempotent
def change_reason_code(kind: str, code: str):
    """Change a code's description, or retire it (``"active": false``) or bring it back (admin)."""
    body = load_json(ReasonCodeChangeSchema())
    row = usecases.change_reason_code(usecases.ChangeReasonCode(kind=kind, code=code, by=g.user, **body))
    return reason_codes.item(row), 200
