"""The chain of custody of a therapy's material: record a handoff (with its scanned label), list the chain."""

from __future__ import annotations

from datetime import UTC

from flask import g
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import in_utc_years, load_json
from server.custody import transfers
from server.usecases.checks import visible_therapy

from . import bp

_PARTY = validate.Length(min=1, max=200)


class CustodyTransferSchema(Schema):
    """POST /therapies/{id}/custody."""

    class Meta:
        unknown = RAISE

    material_id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    from_party = fields.String(required=True, validate=_PARTY)
    to_party = fields.String(required=True, validate=_PARTY)
    scanned_coi = fields.String(required=True, validate=validate.Length(min=1, max=40))
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    occurred_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=UTC, validate=in_utc_years)


@bp.post("/therapies/<therapy_id>/custody")
@require(*usecases.RecordCustody.ROLES)
@idempotent
def record_custody_transfer(therapy_id: str):
    """Record one handoff of a material; the scanned label must be this therapy's COI (409 otherwise)."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    transfer = usecases.record_custody(
        usecases.RecordCustody(therapy_id=therapy_id, by=g.user, **load_json(CustodyTransferSchema()))
    )
    return transfers.transfer_item(transfer), 201


@bp.get("/therapies/<therapy_id>/custody")
@require()
def list_custody_transfers(therapy_id: str):
    """The therapy's chain of custody in the order the handoffs happened, with any gap in it."""
    therapy = visible_therapy(g.user, therapy_id)
    chain = transfers.chain(therapy.id)
    return {
        "therapy_id": therapy.id,
        "coi": therapy.coi,
        "items": [transfers.transfer_item(t) for t in chain],
        "breaks": transfers.breaks(chain),
        "next_cursor": None,
    }
