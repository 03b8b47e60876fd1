"""The therapy page (identity, stage, clocks, tasks, waits, alerts, custody, timeline, diagram) and its actions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from server import usecases
from server.access.auth import can_see_site, visible_site_ids
from server.compliance import record
from server.compliance.record import PLAIN_WORDS
from server.compliance.signatures import signatures_for
from server.custody import shipments as shipment_records
from server.errors import ApiError, NotFound
from server.store.extensions import db
from server.store.models import (
    Alert,
    AuditEntry,
    CustodyTransfer,
    Incident,
    ProcessDefinition,
    Site,
    TaskRecord,
    Therapy,
)
from server.usecases import checks
from server.workflow import lifecycle
from server.workflow.parties import CHANGEABLE

from . import bp, present
from .network import party_sites, reasons
from .session import has_role, login_required, page_user
from .slots import booking_context
from .vendor import map_installed

# Audit actions of a therapy that tell its story (the rest stays in the audit page).
TIMELINE_ACTIONS = {
    "therapy.started",
    "task.ready",
    "task.completed",
    "message.received",
    "timer.fired",
    "task.escalated",
    "therapy.completed",
    "therapy.cancelled",
    "signature.applied",
    "signature.failed",
    "alert.raised",
    "alert.acknowledged",
    "custody.transferred",
    "coi.mismatch",
    "condition.excursion",
    "incident.opened",
    "incident.resolved",
    "notification.sent",
    "message.refused",
    "task.refused",
    "correction.recorded",
    "therapy.held",
    "therapy.resumed",
    "therapy.migrated",
    "therapy.rescheduled",
}


# What each step of the timeline is called on the page (the audit action stays in the element's title).
ACTION_LABELS = {
    "therapy.started": "Started",
    "task.ready": "Task ready",
    "task.completed": "Done",
    "task.cancelled": "Withdrawn",
    "message.received": "Message received",
    "timer.fired": "Time reached",
    "task.escalated": "Late",
    "therapy.completed": "Completed",
    "therapy.cancelled": "Cancelled",
    "signature.applied": "Signed",
    "signature.failed": "Signature refused",
    "alert.raised": "Alert",
    "alert.acknowledged": "Alert acknowledged",
    "custody.transferred": "Handed over",
    "coi.mismatch": "COI mismatch",
    "condition.excursion": "Temperature excursion",
    "incident.opened": "Incident",
    "incident.resolved": "Incident resolved",
    "notification.sent": "Notified",
    "message.refused": "Message refused",
    "task.refused": "Refused",
    "correction.recorded": "Corrected",
    "therapy.held": "Held",
    "therapy.resumed": "Resumed",
    "therapy.migrated": "New version",
    "therapy.rescheduled": "Back to scheduling",
}


def action_label(action: str) -> str:
    """The timeline's name for an audit action (the action itself when it has none)."""
    return ACTION_LABELS.get(action, action)


bp.add_app_template_filter(action_label, "action_label")


def step_words(entry: AuditEntry) -> str:
    """A lifecycle step of the timeline (a hold, a resume, a migration, ...) in the record's plain words, with
    its reason when the words do not already carry it; empty for other steps."""
    words = PLAIN_WORDS.get(entry.action)
    if words is None:
        return ""
    text = words(entry.data or {}, entry.reason)
    return f"{text} · reason: {entry.reason}" if entry.reason and entry.reason not in text else text


bp.add_app_template_filter(step_words, "step_words")


def visible_therapy(therapy_id: str) -> Therapy:
    """The therapy when the session's user may see it; 404 otherwise (as the API answers)."""
    try:
        return checks.visible_therapy(page_user(), therapy_id)
    except NotFound:
        abort(404)


def _waits(therapy: Therapy) -> list[dict]:
    """What the therapy waits for, with names and due times."""
    activities = (therapy.definition.info or {}).get("activities", {})
    out = []
    for wait in therapy.waits or []:
        activity = activities.get(wait.get("activity_id"), {})
        attached = activities.get(wait.get("attached_to") or "", {})
        out.append(
            {
                **wait,
                "label": activity.get("name") or wait.get("name") or wait.get("activity_id"),
                "attached_label": attached.get("name"),
            }
        )
    return out


def _timeline(therapy: Therapy) -> Sequence[AuditEntry]:
    return (
        db.session.execute(
            select(AuditEntry)
            .where(AuditEntry.therapy_id == therapy.id, AuditEntry.action.in_(TIMELINE_ACTIONS))
            .order_by(AuditEntry.seq)
        )
        .scalars()
        .all()
    )


def shipment_views(therapy: Therapy) -> list[dict]:
    """Each shipment of the therapy as the page shows it: its record (with the window and whether it is late),
    the positions for its map (oldest first) and a timeline of its positions and data-logger readings."""
    views = []
    for shipment in shipment_records.of_therapy(therapy.id):
        positions = shipment_records.positions(shipment.id)
        readings = shipment_records.readings(shipment)
        item = shipment_records.shipment_item(shipment, therapy, last=positions[-1] if positions else None)
        events: list[dict[str, Any]] = [
            {"at": p.recorded_at, "kind": "position", "position": shipment_records.position_item(p)} for p in positions
        ]
        events += [{"at": _parsed(r["recorded_at"]), "kind": "reading", "reading": r} for r in readings]
        events.sort(key=lambda event: event["at"])
        views.append(
            {
                "item": item,
                "timeline": events,
                "map": {
                    "origin": shipment.from_party,
                    "destination": shipment.to_party,
                    "points": [
                        {"lat": p.latitude, "lng": p.longitude, "at": present.when(p.recorded_at), "note": p.note or ""}
                        for p in positions
                    ],
                },
            }
        )
    return views


def _parsed(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def completed_activities(therapy: Therapy) -> list[str]:
    """Activity ids the therapy has passed (from its audit trail), for the diagram's highlighting."""
    rows = db.session.execute(
        select(AuditEntry.data).where(
            AuditEntry.therapy_id == therapy.id,
            AuditEntry.action.in_(("activity.completed", "task.completed", "message.received", "timer.fired")),
        )
    ).all()
    done = {(row[0] or {}).get("activity_id") for row in rows}
    return sorted(a for a in done if a)


@bp.get("/therapies/<therapy_id>")
@login_required()
def therapy_page(therapy_id: str):
    """Everything about one therapy on one page."""
    therapy = visible_therapy(therapy_id)
    user = page_user()
    tasks = (
        db.session.execute(
            select(TaskRecord).where(TaskRecord.therapy_id == therapy.id).order_by(TaskRecord.created_at)
        )
        .scalars()
        .all()
    )
    alerts = (
        db.session.execute(select(Alert).where(Alert.therapy_id == therapy.id).order_by(Alert.raised_at.desc()))
        .scalars()
        .all()
    )
    custody = (
        db.session.execute(
            select(CustodyTransfer)
            .where(CustodyTransfer.therapy_id == therapy.id)
            .order_by(CustodyTransfer.occurred_at)
        )
        .scalars()
        .all()
    )
    incidents = (
        db.session.execute(
            select(Incident).where(Incident.therapy_id == therapy.id).order_by(Incident.opened_at.desc())
        )
        .scalars()
        .all()
    )
    treatment_centre = can_see_site(user, therapy.site_id)
    can_cancel = therapy.status == "active" and treatment_centre and has_role(user, *usecases.CancelTherapy.ROLES)
    lifecycle_role = treatment_centre and has_role(user, *usecases.HoldTherapy.ROLES)
    can_change = (
        therapy.status in ("active", "on_hold")
        and has_role(user, *usecases.ChangeParties.ROLES)
        and (treatment_centre or has_role(user, "planner"))
    )
    timeline = _timeline(therapy)
    return render_template(
        "web/therapy.html",
        therapy=therapy,
        open_tasks=[t for t in tasks if t.status == "ready"],
        done_tasks=[t for t in tasks if t.status != "ready"],
        waits=_waits(therapy),
        alerts=alerts,
        custody=custody,
        signatures=signatures_for(therapy),
        incidents=incidents,
        timeline=timeline,
        v2v=present.vein_to_vein(therapy),
        completed=completed_activities(therapy),
        current=therapy.current_activities or [],
        can_cancel=can_cancel,
        can_hold=lifecycle_role and therapy.status == "active",
        can_resume=lifecycle_role and therapy.status == "on_hold",
        can_reschedule=lifecycle_role and lifecycle.can_reschedule(therapy),
        send_back_reasons=reasons("reschedule") if lifecycle_role and lifecycle.can_reschedule(therapy) else [],
        collections=record.collections(list(tasks), list(timeline)),
        hold_reasons=reasons("hold") if lifecycle_role and therapy.status == "active" else [],
        can_change_parties=can_change,
        changeable=CHANGEABLE,
        party_sites=party_sites() if can_change else {},
        cancel_reasons=reasons("cancel") if can_cancel else [],
        reassign_reasons=reasons("reassign") if can_change else [],
        shipments=shipment_views(therapy),
        map_viewer=map_installed(),
        **booking_context(user, therapy),
    )


@bp.post("/therapies")
@login_required(*usecases.StartTherapy.ROLES)
def start_therapy():
    """Start a therapy from the control tower's form: the ``StartTherapy`` command."""
    patient_reference = request.form.get("patient_reference", "").strip()
    named = {party: request.form.get(party, "").strip() for party in CHANGEABLE}
    command = usecases.StartTherapy(
        process_key=request.form.get("process_key", ""),
        site=request.form.get("site", ""),
        patient_reference=patient_reference,
        by=page_user(),
        parties={party: code for party, code in named.items() if code} or None,
    )
    try:
        therapy = usecases.start_therapy(command)
    except ApiError as exc:
        db.session.rollback()
        flash(f"The therapy was not started: {refusal(exc)}", "error")
        return redirect(url_for("web.dashboard"))
    flash(f"Therapy started for {patient_reference}: COI {present.eye_readable(therapy.coi)}.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy.id))


@bp.post("/therapies/<therapy_id>/cancel")
@login_required(*usecases.CancelTherapy.ROLES)
def cancel_therapy(therapy_id: str):
    """Cancel with a reason code and a reason (OTHER, or no code, needs the reason): the ``CancelTherapy``
    command."""
    therapy = visible_therapy(therapy_id)
    code, reason = reason_fields()
    command = usecases.CancelTherapy(therapy_id=therapy.id, reason=reason, reason_code=code, by=page_user())
    if attempt(lambda: usecases.cancel_therapy(command), "Not cancelled") is not None:
        flash("The therapy was cancelled; its open tasks were withdrawn.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))


@bp.post("/therapies/<therapy_id>/parties")
@login_required(*usecases.ChangeParties.ROLES)
def change_parties(therapy_id: str):
    """Hand a party of the therapy to another site, with a reason code and a reason: the ``ChangeParties``
    command (the party's open tasks move with it)."""
    therapy = visible_therapy(therapy_id)
    party, site = request.form.get("party", ""), request.form.get("site", "").strip()
    code, reason = reason_fields()
    try:
        usecases.change_parties(
            usecases.ChangeParties(
                therapy_id=therapy.id, sites={party: site}, reason_code=code or "", reason=reason, by=page_user()
            )
        )
    except ApiError as exc:
        db.session.rollback()
        flash(f"The {party} party was not handed over: {refusal(exc)}", "error")
    else:
        flash(f"The {party} party is now {site}; its open tasks moved there.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))


def reason_fields() -> tuple[str | None, str | None]:
    """The form's reason code and free-text reason, each None when left empty."""
    code, reason = request.form.get("reason_code", "").strip(), request.form.get("reason", "").strip()
    return code or None, reason or None


T = TypeVar("T")


def attempt(run: Callable[[], T], refused: str) -> T | None:
    """A page's action: ``run`` the command and return its result; on a refusal roll back what it left open,
    show ``refused: <the command's reason>`` and return None."""
    try:
        return run()
    except ApiError as exc:
        db.session.rollback()
        flash(f"{refused}: {refusal(exc)}", "error")
        return None


def refusal(exc: ApiError) -> str:
    """A command's refusal as one sentence, with the fields it names."""
    fields = exc.details.get("fields") or {}
    detail = (
        "; ".join(f"{k}: {v if isinstance(v, str) else ' '.join(map(str, v))}" for k, v in fields.items())
        if isinstance(fields, dict)
        else ""
    )
    return f"{exc.message} {detail}".strip()


@bp.get("/definitions/<key>/versions/<int:version>/diagram.bpmn")
@login_required()
def diagram_xml(key: str, version: int):
    """The BPMN XML of a version, for the diagram viewer."""
    row = db.session.execute(
        select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == version)
    ).scalar_one_or_none()
    if row is None:
        abort(404)
    return Response(row.bpmn_xml, mimetype="application/xml")


def startable(user) -> tuple[list[ProcessDefinition], list[Site]]:
    """The processes (latest versions) and sites a user may start therapies at."""
    rows = db.session.execute(
        select(ProcessDefinition).order_by(ProcessDefinition.key, ProcessDefinition.version.desc())
    ).scalars()
    latest: dict[str, ProcessDefinition] = {}
    for row in rows:
        latest.setdefault(row.key, row)
    sites = visible_site_ids(user)
    query = select(Site).order_by(Site.code)
    if sites is not None:
        query = query.where(Site.id.in_(sites))
    return list(latest.values()), [s for s in db.session.execute(query).scalars() if s.kind == "treatment-centre"]
