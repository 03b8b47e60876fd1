"""``POST`` and ``GET /therapies/{id}/corrections``: correct one recorded value, list the corrections."""

from __future__ import annotations

from flask import g
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import as_known_to, require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.usecases.checks import visible_therapy
from server.workflow.corrections import correction_view, corrections_for

from . import bp


class CorrectionSchema(Schema):
    """POST /therapies/{id}/corrections."""

    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Length(min=1, max=500))
    value = fields.Raw(required=True, allow_none=True)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


@bp.post("/therapies/<therapy_id>/corrections")
@require(*usecases.CorrectValue.ROLES)
@idempotent
def create_correction(therapy_id: str):
    """Correct one recorded process-data value; the reason is mandatory and old and new values are audited."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    correction = usecases.correct_value(
        usecases.CorrectValue(therapy_id=therapy_id, by=g.user, **load_json(CorrectionSchema()))
    )
    return correction_view(correction), 201


@bp.get("/therapies/<therapy_id>/corrections")
@require()
def list_corrections(therapy_id: str):
    """The corrections of one therapy's data, oldest first (a quoted patient reference withheld from those who
    need not know it)."""
    therapy = visible_therapy(g.user, therapy_id)
    return {"items": as_known_to(g.user, therapy, corrections_for(therapy)), "next_cursor": None}
