"""Incidents: failed service tasks that ran out of retries, for an admin to retry or resolve."""

from __future__ import annotations

from flask import g, request
from marshmallow import EXCLUDE, Schema, fields, validate
from sqlalchemy import select

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.store.extensions import db
from server.store.models import Incident, Therapy
from server.workflow import incidents

from ..errors import BadRequest
from . import bp
from .paging import page
from .views import therapy_summary


class ResolveSchema(Schema):
    """POST /incidents/{id}/resolve: why, and optionally the result the failed step would have given."""

    class Meta:
        unknown = EXCLUDE

    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    result = fields.Raw(load_default=None, allow_none=True)


@bp.get("/incidents")
@require("admin", "auditor")
def list_incidents():
    """Incidents, newest first, filtered by status (retrying, open, resolved) and therapy."""
    query = select(Incident).order_by(Incident.opened_at.desc(), Incident.id)
    status = request.args.get("status")
    if status:
        if status not in incidents.STATUSES:
            raise BadRequest(f"status must be one of {', '.join(incidents.STATUSES)}.", code="invalid_filter")
        query = query.where(Incident.status == status)
    if request.args.get("therapy_id"):
        query = query.where(Incident.therapy_id == request.args["therapy_id"])
    return page(query, incidents.incident_item)


@bp.get("/incidents/<incident_id>")
@require("admin", "auditor")
def get_incident(incident_id: str):
    """One incident with every attempt's error."""
    return incidents.incident_item(incidents.get_incident(incident_id))


def _answer(incident: Incident) -> dict:
    therapy = db.session.get_one(Therapy, incident.therapy_id)  # an incident's therapy is never deleted
    return {"incident": incidents.incident_item(incident), "therapy": therapy_summary(therapy)}


@bp.post("/incidents/<incident_id>/retry")
@require(*usecases.RetryIncident.ROLES)
@idempotent
def retry_incident(incident_id: str):
    """Run the failed task again now; when it fails again the incident stays open with the new error."""
    return _answer(usecases.retry_incident(usecases.RetryIncident(incident_id=incident_id, by=g.user))), 200


@bp.post("/incidents/<incident_id>/resolve")
@require(*usecases.ResolveIncident.ROLES)
@idempotent
def resolve_incident(incident_id: str):
    """Close the incident with a reason: the failed step counts as done by hand and the therapy runs on."""
    incidents.get_incident(incident_id)  # an unknown incident is 404 before the body is read
    body = load_json(ResolveSchema())
    incident = usecases.resolve_incident(
        usecases.ResolveIncident(incident_id=incident_id, reason=body["reason"], result=body["result"], by=g.user)
    )
    return _answer(incident), 200
