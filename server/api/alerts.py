"""Alerts: what people must look at (escalations, COI mismatches, excursions, incidents), by site."""

from __future__ import annotations

from flask import g, request
from marshmallow import EXCLUDE, Schema, fields, validate
from sqlalchemy import select

from server.access.auth import can_see_site, require, visible_site_ids
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.oversight import alerts as alert_cases
from server.store.extensions import db
from server.store.models import ROLES, Alert
from server.store.uow import unit_of_work

from ..errors import Conflict, NotFound
from . import bp
from .filters import by_status, within_caller_sites
from .paging import page

STATUSES = ("open", "acknowledged")
# Everyone who works on therapies may acknowledge what they see; the auditor only reads.
ACKNOWLEDGING_ROLES = tuple(r for r in ROLES if r != "auditor")


class AcknowledgeSchema(Schema):
    """POST /alerts/{id}/acknowledge."""

    class Meta:
        unknown = EXCLUDE

    note = fields.String(load_default="", validate=validate.Length(max=2000))


def visible_alert(alert_id: str) -> Alert:
    """The alert if the caller may see its site (alerts without a site: unscoped users only); 404 otherwise."""
    alert = db.session.get(Alert, alert_id)
    if alert is None or not _may_see(alert):
        raise NotFound("No such alert.", details={"alert_id": alert_id})
    return alert


def _may_see(alert: Alert) -> bool:
    if alert.site_id is None:
        return visible_site_ids(g.user) is None
    return can_see_site(g.user, alert.site_id)


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
    return page(within_caller_sites(query, Alert.site_id), alert_cases.alert_item)


@bp.get("/alerts/<alert_id>")
@require()
def get_alert(alert_id: str):
    """One alert."""
    return alert_cases.alert_item(visible_alert(alert_id))


@bp.post("/alerts/<alert_id>/acknowledge")
@require(*ACKNOWLEDGING_ROLES)
@idempotent
def acknowledge_alert(alert_id: str):
    """Acknowledge an open alert with a note (audited); 409 when it was acknowledged already."""
    alert = visible_alert(alert_id)
    body = load_json(AcknowledgeSchema())
    with unit_of_work():
        db.session.refresh(alert)
        if alert.status != "open":
            raise Conflict(
                f"The alert was already acknowledged by {alert.acknowledged_by}.",
                code="already_acknowledged",
                details={"alert_id": alert.id},
            )
        alert_cases.acknowledge(alert, g.user.username, body["note"])
    return alert_cases.alert_item(alert), 200
