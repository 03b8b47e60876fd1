"""Messages from integrators (MES, ERP, LIMS, couriers) to waiting therapies."""

from __future__ import annotations

from flask import g
from sqlalchemy import select

from engine.coi import CoiError, parse_coi

from .. import therapies as usecases
from ..auth import require
from ..errors import Invalid
from ..extensions import db
from ..idempotency import idempotent
from ..models import Therapy
from ..schemas import MessageSchema, load_json
from . import bp
from .therapies import visible_therapy


@bp.post("/messages")
@require("integrator", "logistics", "manufacturing", "coordinator", "qa", "admin")
@idempotent
def post_message():
    """Deliver a named message to the therapy (by id or COI) that waits for it."""
    body = load_json(MessageSchema())
    if bool(body["therapy_id"]) == bool(body["coi"]):
        raise Invalid("Name the therapy by exactly one of 'therapy_id' or 'coi'.", code="invalid_request",
                      details={"fields": {"therapy_id": "give this or coi"}})
    if body["coi"]:
        try:
            coi = parse_coi(body["coi"])
        except CoiError as exc:
            raise Invalid(str(exc), code=exc.code, details={"field": "coi"}) from None
        therapy_id = db.session.execute(select(Therapy.id).where(Therapy.coi == coi.value)).scalar_one_or_none()
        therapy = visible_therapy(therapy_id or "none")
    else:
        therapy = visible_therapy(body["therapy_id"])
    therapy, activity_id = usecases.deliver_message(therapy, body["name"], body["payload"], g.user.username)
    return {"delivered": True, "therapy_id": therapy.id, "activity_id": activity_id, "status": therapy.status,
            "stage": therapy.stage}, 200
