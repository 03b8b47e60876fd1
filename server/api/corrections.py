"""``POST`` and ``GET /therapies/{id}/corrections``: the routes of ``server.workflow.corrections``."""

from __future__ import annotations

from flask import g
from marshmallow import RAISE, Schema, fields, validate

from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.workflow.corrections import correct_value, correction_view, corrections_for

from . import bp
from .therapies import visible_therapy


class CorrectionSchema(Schema):
    """POST /therapies/{id}/corrections."""

    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Length(min=1, max=500))
    value = fields.Raw(required=True, allow_none=True)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


@bp.post("/therapies/<therapy_id>/corrections")
@require("qa", "admin")
@idempotent
def create_correction(therapy_id: str):
    """Correct one recorded process-data value; the reason is mandatory and old and new values are audited."""
    therapy = visible_therapy(therapy_id)
    body = load_json(CorrectionSchema())
    correction = correct_value(therapy, body["path"], body["value"], body["reason"], g.user.username)
    return correction_view(correction), 201


@bp.get("/therapies/<therapy_id>/corrections")
@require()
def list_corrections(therapy_id: str):
    """The corrections of one therapy's data, oldest first."""
    therapy = visible_therapy(therapy_id)
    return {"items": corrections_for(therapy), "next_cursor": None}
