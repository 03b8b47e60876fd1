"""Messages from integrators (MES, ERP, LIMS, couriers): to a waiting therapy, or starting a new one."""

from __future__ import annotations

from flask import g
from sqlalchemy import select

from server.access.auth import can_see_site, require
from server.api.idempotency import idempotent
from server.api.schemas import MessageSchema, load_json
from server.store.extensions import db
from server.store.models import AuditEntry, Site
from server.workflow import commands
from server.workflow import therapies as usecases
from server.workflow.definitions import started_by_message

from ..errors import Forbidden, Invalid
from . import bp

STARTERS = ("coordinator", "integrator", "admin")


@bp.post("/messages")
@require("integrator", "logistics", "manufacturing", "coordinator", "qa", "admin")
@idempotent
def post_message():
    """Deliver a named message to the therapy (by id or COI) that waits for it, or start one by a start message."""
    body = load_json(MessageSchema())
    if not body["therapy_id"] and not body["coi"]:
        return _start_by_message(body)
    therapy, activity_id = commands.deliver_message(
        commands.DeliverMessage(
            name=body["name"], by=g.user, therapy_id=body["therapy_id"], coi=body["coi"], payload=body["payload"]
        )
    )
    return {
        "delivered": True,
        "therapy_id": therapy.id,
        "activity_id": activity_id,
        "status": therapy.status,
        "stage": therapy.stage,
    }, 200


def _start_by_message(body: dict):
    """Start the process whose message start event has this name; ``site`` and ``patient`` say for whom."""
    payload = body["payload"] if isinstance(body["payload"], dict) else {}
    matches = started_by_message(body["name"], body["process_key"])
    if not matches:
        raise Invalid(
            f"Name the therapy ('therapy_id' or 'coi'): no deployed process starts on a message "
            f"named '{body['name']}'" + (f" in '{body['process_key']}'" if body["process_key"] else "") + ".",
            code="no_message_start",
            details={"field": "therapy_id", "name": body["name"]},
        )
    if len(matches) > 1:
        raise Invalid(
            f"Several processes start on '{body['name']}'; say which with 'process_key'.",
            code="ambiguous_message_start",
            details={"field": "process_key", "process_keys": [d.key for d in matches]},
        )
    if not any(role in g.user.roles for role in STARTERS):
        raise Forbidden(
            f"Starting a therapy needs one of the roles: {', '.join(STARTERS)}.",
            details={"required_roles": list(STARTERS)},
        )
    site_code = body["site"] or payload.get("site")
    patient = body["patient"] or payload.get("patient") or {}
    reference = patient.get("reference") if isinstance(patient, dict) else None
    reference = reference or payload.get("patient_reference")
    if not isinstance(site_code, str) or not site_code:
        raise Invalid(
            "A message that starts a therapy needs 'site' (a site code), in the body or the payload.",
            code="invalid_request",
            details={"field": "site"},
        )
    if not isinstance(reference, str) or not 0 < len(reference) <= 100:
        raise Invalid(
            "A message that starts a therapy needs 'patient': {'reference': ...}, in the body or the payload.",
            code="invalid_request",
            details={"field": "patient.reference"},
        )
    site = db.session.execute(select(Site).where(Site.code == site_code)).scalar_one_or_none()
    if site is not None and not can_see_site(g.user, site.id):
        raise Forbidden("You may not start therapies at this site.", details={"field": "site"})
    definition = matches[0]
    therapy = usecases.start_therapy(
        definition.key,
        definition.version,
        site_code,
        reference,
        None,
        g.user.username,
        start_message=(body["name"], body["payload"]),
    )
    received = (
        db.session.execute(
            select(AuditEntry.data)
            .where(AuditEntry.therapy_id == therapy.id, AuditEntry.action == "message.received")
            .order_by(AuditEntry.seq)
            .limit(1)
        ).scalar_one_or_none()
        or {}
    )
    return {
        "delivered": True,
        "started": True,
        "therapy_id": therapy.id,
        "coi": therapy.coi,
        "activity_id": received.get("activity_id"),
        "status": therapy.status,
        "stage": therapy.stage,
    }, 201
