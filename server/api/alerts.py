"""Alerts: what people must look at (escalations, COI mismatches, excursions, incidents), by site."""

from __future__ import annotations

from flask import g, request
from marshmallow import EXCLUDE, Schema, fields, validate
from sqlalchemy import select

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.oversight.alerts import alert_item
from server.store.models import Alert
from server.usecases.checks import visible_alert

from . import bp
from .filters import by_status, within_caller_sites
from .paging import page

STATUSES = ("open", "acknowledged")


class AcknowledgeSchema(Schema):
    """POST /alerts/{id}/acknowledge."""

    class Meta:
        unknown = EXCLUDE

    note = fields.String(load_default="", validate=validate.Length(max=2000))


@bp.get("/alerts")
@require()
def list_alerts():
    """Alerts the caller may see, newest first, filtered by therapy and status."""
    query = select(Alert).order_by(Alert.raised_at.desc(), Alert.id)
    query = by_status(query, Alert.status, STATUSES)
    if request.args.get("therapy_id"):
        query = query.where(Alert.therapy_id == request.args["therapy_id"])
    if request.args.get("kind"):
        query = query.where(Alert.kind == request.args["kind"])
    return page(within_caller_sites(query, Alert.site_id), alert_item)


@bp.get("/alerts/<alert_id>")
@require()
def get_alert(alert_id: str):
    """One alert."""
    return alert_item(visible_alert(g.user, alert_id))


@bp.post("/alerts/<alert_id>/acknowledge")
@require(*usecases.AcknowledgeAlert.ROLES)
@idempotent
def acknowledge_alert(alert_id: str):
    """Acknowledge an open alert with a note (audited); 409 when it was acknowledged already."""
    visible_alert(g.user, alert_id)  # an unknown or unseen alert is 404 before the body is read
    body = load_json(AcknowledgeSchema())
    alert = usecases.acknowledge_alert(usecases.AcknowledgeAlert(alert_id=alert_id, by=g.user, note=body["note"]))
    return alert_item(alert), 200
