"""The alerts page (acknowledge with a note) and the audit page for auditors (filter, verify the chain)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from flask import Response, flash, redirect, render_template, request, stream_with_context, url_for
from sqlalchemy import Select, select

from server import usecases
from server.access.auth import visible_site_ids
from server.clock import iso
from server.errors import ApiError
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, AuditHead, Therapy
from server.usecases.checks import visible_alert

from . import bp
from .network import therapies_named
from .session import AUDIT_READERS, has_role, login_required, page_user, safe_next, session_user

AUDIT_PAGE_SIZE = 200
CSV_COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "therapy_id",
    "reason",
    "data",
    "prev_hash",
    "hash",
)


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


def _day(text: str) -> datetime | None:
    """A form's date (YYYY-MM-DD) as midnight UTC, None when empty or not a date."""
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC) if text.strip() else None
    except ValueError:
        return None


def _audit_filters() -> tuple[dict[str, str], Therapy | None, Select | None]:
    """The audit page's filters as given, the therapy they name, and the query they make (None: nothing matches)."""
    given = {k: request.args.get(k, "").strip() for k in ("therapy", "action", "actor", "from", "to")}
    therapy = next(iter(therapies_named(page_user(), given["therapy"])), None)
    if given["therapy"] and therapy is None:
        return given, None, None
    query = select(AuditEntry)
    if therapy is not None:
        query = query.where(AuditEntry.therapy_id == therapy.id)
    if given["action"]:
        query = query.where(AuditEntry.action == given["action"])
    if given["actor"]:
        query = query.where(AuditEntry.actor == given["actor"])
    start, end = _day(given["from"]), _day(given["to"])
    if start is not None:
        query = query.where(AuditEntry.at >= start)
    if end is not None:
        query = query.where(AuditEntry.at < end + timedelta(days=1))  # the "to" day itself is included
    return given, therapy, query


@bp.get("/audit", endpoint="audit")
@login_required(*AUDIT_READERS)
def audit_page():
    """The audit trail in sequence, filtered by therapy (id, COI or patient reference), action, actor and dates;
    each entry's subject linked; the chain's head (its last hash) to record outside the database."""
    given, therapy, query = _audit_filters()
    entries: Sequence[AuditEntry] = []
    if query is not None:
        before = _sequence_number(request.args.get("before", ""))
        if before is not None:
            query = query.where(AuditEntry.seq < before)
        entries = db.session.execute(query.order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE_SIZE)).scalars().all()
    actions = db.session.execute(select(AuditEntry.action).distinct().order_by(AuditEntry.action)).scalars().all()
    verification = None
    if request.args.get("verify"):
        verification = audit.verify()
    return render_template(
        "web/audit.html",
        entries=entries,
        given=given,
        therapy_text=given["therapy"],
        therapy=therapy,
        action=given["action"],
        actions=actions,
        verification=verification,
        head=db.session.get(AuditHead, 1),
        page_size=AUDIT_PAGE_SIZE,
        can_verify=has_role(session_user(), *AUDIT_READERS),
    )


@bp.get("/audit.csv", endpoint="audit_csv")
@login_required(*AUDIT_READERS)
def audit_csv():
    """The filtered audit trail as CSV, oldest first, every column including the hashes."""
    _given, _therapy, query = _audit_filters()

    def rows():
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        yield out.getvalue()
        if query is None:
            return
        for entry in db.session.execute(query.order_by(AuditEntry.seq)).yield_per(1000).scalars():
            out.seek(0)
            out.truncate()
            writer.writerow(
                [
                    entry.seq,
                    iso(entry.at),
                    entry.actor,
                    entry.action,
                    entry.subject_type,
                    entry.subject_id,
                    entry.therapy_id or "",
                    entry.reason or "",
                    json.dumps(entry.data or {}, sort_keys=True),
                    entry.prev_hash,
                    entry.hash,
                ]
            )
            yield out.getvalue()

    response = Response(stream_with_context(rows()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="tether-audit.csv"'
    return response
