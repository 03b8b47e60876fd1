"""Alerts: what people must look at (escalations, COI mismatches, excursions, incidents), by site."""

from __future__ import annotations

from flask import g, request
from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.clock import clock
from server.errors import BadRequest
from server.oversight.alerts import OLDER_THAN, SEVERITIES, STATUSES, AlertFilter, alert_item
from server.usecases.alert_commands import MOST_AT_ONCE, NOTE_LONGEST
from server.usecases.checks import visible_alert

from . import bp
from .paging import page
from .schemas import AlertSchema

FLAGS = {"true": True, "1": True, "false": False, "0": False, "": False}


class AcknowledgeSchema(Schema):
    """POST /alerts/{id}/acknowledge: the note is required for a high or critical alert."""

    class Meta:
        unknown = EXCLUDE

    note = fields.String(load_default="", validate=validate.Length(max=NOTE_LONGEST))


class AcknowledgeManySchema(Schema):
    """POST /alerts/acknowledge: several open alerts with one note (required when any is high or critical)."""

    class Meta:
        unknown = EXCLUDE

    alert_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=36)),
        required=True,
        validate=validate.Length(min=1, max=MOST_AT_ONCE),
    )
    note = fields.String(load_default="", validate=validate.Length(max=NOTE_LONGEST))


class AlertListSchema(Schema):
    """The alerts a bulk acknowledgement acknowledged, in the order they were named."""

    class Meta:
        unknown = INCLUDE

    items = fields.List(fields.Nested(AlertSchema), required=True)


def _choice(name: str, allowed) -> str | None:
    """The query argument ``name`` (None when absent or empty); 400 ``invalid_filter`` when not in ``allowed``."""
    value = request.args.get(name, "")
    if not value:
        return None
    allowed = tuple(allowed)
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}.", code="invalid_filter", details={"field": name})
    return value


def _filter() -> AlertFilter:
    """The list's filters from the query string."""
    therapy_id = request.args.get("therapy_id")
    return AlertFilter(
        status=_choice("status", STATUSES),
        severity=_choice("severity", SEVERITIES),
        kind=request.args.get("kind") or None,
        therapy_ids=[therapy_id] if therapy_id else None,
        for_me=FLAGS[_choice("for_me", FLAGS) or ""],
        older_than=_choice("older_than", OLDER_THAN),
    )


@bp.get("/alerts")
@require()
def list_alerts():
    """Alerts the caller may see, newest first, filtered by status, severity, kind, therapy, age and whether
    they are meant for the caller (one of their roles, or no role in particular)."""
    return page(_filter().query(g.user, clock()()), alert_item)


@bp.post("/alerts/acknowledge")
@require(*usecases.AcknowledgeAlerts.ROLES)
@idempotent
def acknowledge_alerts():
    """Acknowledge several open alerts with one note, all or none: 409 naming those acknowledged already."""
    body = load_json(AcknowledgeManySchema())
    done = usecases.acknowledge_alerts(
        usecases.AcknowledgeAlerts(alert_ids=body["alert_ids"], by=g.user, note=body["note"])
    )
    return {"items": [alert_item(a) for a in done]}, 200


@bp.get("/alerts/<alert_id>")
@require()
def get_alert(alert_id: str):
    """One alert."""
    return alert_item(visible_alert(g.user, alert_id))


@bp.post("/alerts/<alert_id>/acknowledge")
@require(*usecases.AcknowledgeAlert.ROLES)
@idempotent
def acknowledge_alert(alert_id: str):
    """Acknowledge an open alert (audited; a note is required for high and critical ones); 409 when it was
    acknowledged already."""
    visible_alert(g.user, alert_id)  # an unknown or unseen alert is 404 before the body is read
    body = load_json(AcknowledgeSchema())
    alert = usecases.acknowledge_alert(usecases.AcknowledgeAlert(alert_id=alert_id, by=g.user, note=body["note"]))
    return alert_item(alert), 200
