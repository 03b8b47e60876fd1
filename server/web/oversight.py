"""The alerts page (acknowledge with a note) and the audit page for auditors (filter, verify the chain)."""

from __future__ import annotations

from collections.abc import Sequence

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from server import usecases
from server.access.auth import visible_site_ids
from server.errors import ApiError
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, Therapy
from server.usecases.checks import visible_alert

from . import bp
from .network import therapies_named
from .session import AUDIT_READERS, has_role, login_required, page_user, safe_next, session_user

AUDIT_PAGE_SIZE = 200


def _visible_alerts(user, status: str):
    query = select(Alert).order_by(Alert.raised_at.desc())
    if status in ("open", "acknowledged"):
        query = query.where(Alert.status == status)
    sites = visible_site_ids(user)
    if sites is not None:
        query = query.where(Alert.site_id.in_(sites))
    return query


@bp.get("/alerts")
@login_required()
def alerts():
    """Alerts you may see, open ones first (filter by status)."""
    user = page_user()
    status = request.args.get("status", "open")
    rows = db.session.execute(_visible_alerts(user, status).limit(500)).scalars().all()
    therapies = (
        {
            t.id: t
            for t in db.session.execute(
                select(Therapy).where(Therapy.id.in_({a.therapy_id for a in rows if a.therapy_id}))
            ).scalars()
        }
        if rows
        else {}
    )
    return render_template(
        "web/alerts.html",
        alerts=rows,
        therapies=therapies,
        status=status,
        can_acknowledge=has_role(user, *usecases.AcknowledgeAlert.ROLES),
    )


@bp.post("/alerts/<alert_id>/acknowledge")
@login_required(*usecases.AcknowledgeAlert.ROLES)
def acknowledge_alert(alert_id: str):
    """Acknowledge an open alert with a note: the ``AcknowledgeAlert`` command (the page asks for a note)."""
    note = request.form.get("note", "").strip()
    back = redirect(safe_next(request.form.get("back")) or url_for("web.alerts"))
    if not note:
        visible_alert(page_user(), alert_id)  # an unseen alert is 404 whatever the form says
        flash("Write a note saying what was done about the alert.", "error")
        return back
    try:
        usecases.acknowledge_alert(usecases.AcknowledgeAlert(alert_id=alert_id, by=page_user(), note=note))
    except ApiError as exc:
        db.session.rollback()
        if exc.status == 404:
            raise
        flash(f"Not acknowledged: {exc.message}", "error")
        return back
    flash("Alert acknowledged.", "success")
    return back


def _sequence_number(text: str) -> int | None:
    """An audit entry's sequence number written as ASCII digits (at most 18: within 64 bits), else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


@bp.get("/audit", endpoint="audit")
@login_required(*AUDIT_READERS)
def audit_page():
    """The audit trail in sequence, filtered by therapy (id, COI or patient reference) and action."""
    therapy_text = request.args.get("therapy", "")
    action = request.args.get("action", "").strip()
    therapy = next(iter(therapies_named(page_user(), therapy_text)), None)
    query = select(AuditEntry).order_by(AuditEntry.seq.desc())
    entries: Sequence[AuditEntry]
    if therapy_text and therapy is None:
        entries = []
    else:
        if therapy is not None:
            query = query.where(AuditEntry.therapy_id == therapy.id)
        if action:
            query = query.where(AuditEntry.action == action)
        before = _sequence_number(request.args.get("before", ""))
        if before is not None:
            query = query.where(AuditEntry.seq < before)
        entries = db.session.execute(query.limit(AUDIT_PAGE_SIZE)).scalars().all()
    actions = db.session.execute(select(AuditEntry.action).distinct().order_by(AuditEntry.action)).scalars().all()
    verification = None
    if request.args.get("verify"):
        verification = audit.verify()
    return render_template(
        "web/audit.html",
        entries=entries,
        therapy_text=therapy_text,
        therapy=therapy,
        action=action,
        actions=actions,
        verification=verification,
        page_size=AUDIT_PAGE_SIZE,
        can_verify=has_role(session_user(), *AUDIT_READERS),
    )
