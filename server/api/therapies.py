"""Therapies: start, list, detail, cancel, timeline."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import select

from engine.definition import PARTIES
from server import usecases
from server.access.auth import as_known_to, require
from server.api.idempotency import idempotent
from server.api.schemas import (
    CancelSchema,
    ChangePartiesSchema,
    HoldSchema,
    RescheduleSchema,
    ResumeSchema,
    StartTherapySchema,
    load_json,
)
from server.clock import iso
from server.compliance.record import PLAIN_WORDS, vein_to_vein
from server.compliance.signatures import signatures_for
from server.store.extensions import db
from server.store.models import AuditEntry, Site, TaskRecord, Therapy
from server.usecases.checks import visible_therapy
from server.usecases.reads import at_party_sites, summary_options, therapies_for
from server.usecases.tower import NO_PHASE, therapy_search
from server.workflow import bookings
from server.workflow.definitions import definition_forms

from . import bp
from .filters import by_status
from .paging import page
from .views import task_item, therapy_summary

STATUSES = ("active", "on_hold", "completed", "cancelled", "failed")


@bp.post("/therapies")
@require(*usecases.StartTherapy.ROLES)
@idempotent
def start_therapy():
    """Start one patient's therapy on a deployed process (its latest version unless ``version`` is given)."""
    body = load_json(StartTherapySchema())
    therapy = usecases.start_therapy(
        usecases.StartTherapy(
            process_key=body["process_key"],
            site=body["site"],
            patient_reference=body["patient"]["reference"],
            by=g.user,
            version=body["version"],
            data=body["data"],
            parties=body["parties"],
        )
    )
    return therapy_summary(therapy), 201


@bp.get("/therapies")
@require()
def list_therapies():
    """Therapies the caller may see (one of their sites takes part), newest first, filtered by status, treatment
    site (``site``), the site of a party (``apheresis``, ``manufacturing``, ``logistics``), process, phase
    (``none`` for those not yet in one) and a search ``q`` (as the control tower's: ``usecases.tower``)."""
    query = by_status(select(Therapy).options(*summary_options()), Therapy.status, STATUSES)
    if request.args.get("site"):
        query = query.join(Site).where(Site.code == request.args["site"])
    query = at_party_sites(query, {party: request.args.get(party, "") for party in PARTIES if party != "treatment"})
    if request.args.get("process_key"):
        query = query.where(Therapy.process_key == request.args["process_key"])
    if request.args.get("phase"):
        phase = request.args["phase"]
        query = query.where(Therapy.phase.is_(None) if phase == NO_PHASE else Therapy.phase == phase)
    if request.args.get("q"):
        query = query.where(therapy_search(g.user, request.args["q"]))
    return page(therapies_for(g.user, query), therapy_summary)


@bp.get("/therapies/<therapy_id>")
@require()
def get_therapy(therapy_id: str):
    """One therapy with its open tasks, what it waits for, and its process data; for a caller who may not know
    the patient, the patient reference is withheld wherever it appears (``access.auth.as_known_to``)."""
    therapy = visible_therapy(g.user, therapy_id, state=False)
    tasks = (
        db.session.execute(select(TaskRecord).where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "ready"))
        .scalars()
        .all()
    )
    forms = definition_forms(therapy.definition_id)
    out = therapy_summary(therapy)
    out.update(
        {
            "open_tasks": [task_item(t, forms) for t in tasks],
            "waiting_for": therapy.waits or [],
            "incidents": therapy_incidents(therapy),
            "alerts": therapy_alerts(therapy),
            "current_activities": therapy.current_activities or [],
            "data": therapy.data or {},
        }
    )
    out["vein_to_vein"] = vein_to_vein(therapy)
    from server.workflow.corrections import corrections_for

    out["signatures"] = signatures_for(therapy)
    out["corrections"] = corrections_for(therapy)
    out["bookings"] = [bookings.booking_item(b) for b in bookings.booked(therapy.id)]
    return as_known_to(g.user, therapy, out)


def therapy_incidents(therapy: Therapy) -> list[dict]:
    """The therapy's incidents, newest first (failed service tasks, retrying, open or resolved)."""
    from server.store.models import Incident
    from server.workflow.incidents import incident_item

    rows = db.session.execute(
        select(Incident).where(Incident.therapy_id == therapy.id).order_by(Incident.opened_at.desc(), Incident.id)
    ).scalars()
    return [incident_item(i) for i in rows]


def therapy_alerts(therapy: Therapy) -> list[dict]:
    """The therapy's alerts, newest first."""
    from server.oversight.alerts import alert_item
    from server.store.models import Alert

    rows = db.session.execute(
        select(Alert).where(Alert.therapy_id == therapy.id).order_by(Alert.raised_at.desc(), Alert.id)
    ).scalars()
    return [alert_item(a) for a in rows]


@bp.post("/therapies/<therapy_id>/cancel")
@require(*usecases.CancelTherapy.ROLES)
@idempotent
def cancel_therapy(therapy_id: str):
    """End a therapy with a reason; its open tasks are withdrawn."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    body = load_json(CancelSchema())
    therapy = usecases.cancel_therapy(
        usecases.CancelTherapy(therapy_id=therapy_id, reason=body["reason"], reason_code=body["reason_code"], by=g.user)
    )
    return therapy_summary(therapy), 200


@bp.post("/therapies/<therapy_id>/hold")
@require(*usecases.HoldTherapy.ROLES)
@idempotent
def hold_therapy(therapy_id: str):
    """Hold a therapy (a reason code of kind hold): no task, timer, escalation or retry moves until it resumes."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    body = load_json(HoldSchema())
    therapy = usecases.hold_therapy(usecases.HoldTherapy(therapy_id=therapy_id, by=g.user, **body))
    return therapy_summary(therapy), 200


@bp.post("/therapies/<therapy_id>/resume")
@require(*usecases.ResumeTherapy.ROLES)
@idempotent
def resume_therapy(therapy_id: str):
    """Resume a held therapy; every pending timer goes on with the time it had left."""
    visible_therapy(g.user, therapy_id)
    body = load_json(ResumeSchema())
    therapy = usecases.resume_therapy(usecases.ResumeTherapy(therapy_id=therapy_id, by=g.user, **body))
    return therapy_summary(therapy), 200


@bp.post("/therapies/<therapy_id>/reschedule")
@require(*usecases.RescheduleTherapy.ROLES)
@idempotent
def reschedule_therapy(therapy_id: str):
    """Send a therapy back to scheduling (a reason code of kind reschedule), where its diagram allows it; the
    slots chosen there move its bookings with that code."""
    visible_therapy(g.user, therapy_id)
    body = load_json(RescheduleSchema())
    therapy = usecases.reschedule_therapy(usecases.RescheduleTherapy(therapy_id=therapy_id, by=g.user, **body))
    return therapy_summary(therapy), 200


@bp.post("/therapies/<therapy_id>/parties")
@require(*usecases.ChangeParties.ROLES)
@idempotent
def change_parties(therapy_id: str):
    """Hand parties of a therapy to other sites (with a reason code of kind reassign); their open tasks move."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    body = load_json(ChangePartiesSchema())
    sites = {party: body[party] for party in PARTIES if body.get(party) is not None}
    therapy = usecases.change_parties(
        usecases.ChangeParties(
            therapy_id=therapy_id, sites=sites, reason_code=body["reason_code"], reason=body["reason"], by=g.user
        )
    )
    return therapy_summary(therapy), 200


@bp.get("/therapies/<therapy_id>/timeline")
@require()
def therapy_timeline(therapy_id: str):
    """The therapy's history in order, from the audit trail (the patient reference withheld from a caller who
    may not know it); the lifecycle's steps (holds, reschedules, rebookings, migrations) also in ``words``."""
    therapy = visible_therapy(g.user, therapy_id)
    entries = (
        db.session.execute(select(AuditEntry).where(AuditEntry.therapy_id == therapy.id).order_by(AuditEntry.seq))
        .scalars()
        .all()
    )
    items = [
        {
            "seq": e.seq,
            "at": iso(e.at),
            "actor": e.actor,
            "action": e.action,
            "reason": e.reason,
            "activity_id": (e.data or {}).get("activity_id"),
            "name": (e.data or {}).get("name"),
            "words": PLAIN_WORDS[e.action](e.data or {}, e.reason) if e.action in PLAIN_WORDS else None,
            "data": e.data,
        }
        for e in entries
    ]
    return {"therapy_id": therapy.id, "items": as_known_to(g.user, therapy, items)}
