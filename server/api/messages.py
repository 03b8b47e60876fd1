"""Messages from integrators (MES, ERP, LIMS, couriers): to a waiting therapy, or starting a new one."""

from __future__ import annotations

from flask import g

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import MessageSchema, load_json
from server.store.models import User

from . import bp
from .shipments import is_shipment_message, take_shipment_message


@bp.post("/messages")
@require(*usecases.DeliverMessage.ROLES)
@idempotent
def post_message():
    """Deliver a named message to the therapy (by id or COI) that waits for it, or start one by a start message."""
    return take_message(load_json(MessageSchema()), g.user)


def take_message(body: dict, user: User) -> tuple[dict, int]:
    """Take one message (the parsed body of ``POST /messages``) as ``user``: the answer and its status (201 a
    therapy started, 202 kept for a held therapy, 200 delivered). The broker's consumer takes its messages here.
    A courier's tracking of a shipment (``shipment.position``, ``shipment.readings``, ``shipment.eta`` with
    ``shipment_id`` in the payload) goes to the shipment's handlers, not to the engine."""
    if is_shipment_message(body):
        return take_shipment_message(body, user)
    if not body["therapy_id"] and not body["coi"]:
        therapy, activity_id = usecases.start_therapy_by_message(
            usecases.StartTherapyByMessage(
                name=body["name"],
                by=user,
                process_key=body["process_key"],
                site=body["site"],
                patient=body["patient"],
                payload=body["payload"],
            )
        )
        return {
            "delivered": True,
            "started": True,
            "therapy_id": therapy.id,
            "coi": therapy.coi,
            "activity_id": activity_id,
            "status": therapy.status,
            "stage": therapy.stage,
        }, 201
    therapy, activity_id = usecases.deliver_message(
        usecases.DeliverMessage(
            name=body["name"], by=user, therapy_id=body["therapy_id"], coi=body["coi"], payload=body["payload"]
        )
    )
    if therapy.status == "on_hold":  # kept, and taken when the therapy resumes
        return {
            "delivered": False,
            "held": True,
            "therapy_id": therapy.id,
            "activity_id": None,
            "status": therapy.status,
            "stage": therapy.stage,
        }, 202
    return {
        "delivered": True,
        "therapy_id": therapy.id,
        "activity_id": activity_id,
        "status": therapy.status,
        "stage": therapy.stage,
    }, 200
