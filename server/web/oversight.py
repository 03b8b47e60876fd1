"""The alerts page (filters, acknowledge one or several) and the audit page for auditors (filter, verify the chain)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from flask import Response, flash, redirect, render_template, request, stream_with_context, url_for
from sqlalchemy import Select, func, select

from server import usecases
from server.clock import clock, iso
from server.errors import ApiError
from server.oversight.alerts import NOTE_REQUIRED, OLDER_THAN, SEVERITIES, STATUSES, AlertFilter
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, Therapy

from . import bp
from .network import therapies_named
from .session import AUDIT_READERS, has_role, login_required, page_user, safe_next, session_user

AUDIT_PAGE_SIZE = 200


ALERTS_PAGE_SIZE = 25
AGES = (("", "Any age"), ("1h", "Older than 1 hour"), ("24h", "Older than 24 hours"), ("7d", "Older than 7 days"))


def _page_number(text: str) -> int:
    """A page number written as ASCII digits (1 when absent or not one)."""
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 6 and int(text) > 0 else 1


def _alert_filters(user) -> tuple[dict[str, str], AlertFilter | None]:
    """The alerts page's filters as given (values it does not know are dropped) and the filter they make (None:
    a therapy was named that the viewer may not see or that does not exist, so nothing matches)."""
    given = {k: request.args.get(k, "").strip() for k in ("status", "scope", "severity", "kind", "therapy", "age")}
    given["status"] = given["status"] if given["status"] in (*STATUSES, "all") else "open"
    given["scope"] = "all" if given["scope"] == "all" else "mine"
    given["severity"] = given["severity"] if given["severity"] in SEVERITIES else ""
    given["age"] = given["age"] if given["age"] in OLDER_THAN else ""
    therapy_ids = None
    if given["therapy"]:
        therapy_ids = [t.id for t in therapies_named(user, given["therapy"])]
        if not therapy_ids:
            return given, None
    return given, AlertFilter(
        status=None if given["status"] == "all" else given["status"],
        severity=given["severity"] or None,
        kind=given["kind"] or None,
        therapy_ids=therapy_ids,
        for_me=given["scope"] == "mine",
        older_than=given["age"] or None,
    )


@bp.get("/alerts")
@login_required()
def alerts():
    """The alerts meant for you (your roles, your sites) or all you may see, filtered by status, severity,
    kind, therapy and age, a page at a time; open ones can be acknowledged one by one or together."""
    user = page_user()
    given, chosen = _alert_filters(user)
    number = _page_number(request.args.get("page", ""))
    rows: Sequence[Alert] = []
    total = 0
    if chosen is not None:
        query = chosen.query(user, clock()())
        total = db.session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
        rows = db.session.execute(query.limit(ALERTS_PAGE_SIZE).offset((number - 1) * ALERTS_PAGE_SIZE)).scalars().all()
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
    kinds = db.session.execute(select(Alert.kind).distinct().order_by(Alert.kind)).scalars().all()
    links = {k: v for k, v in given.items() if v and (k, v) not in (("status", "open"), ("scope", "mine"))}
    return render_template(
        "web/alerts.html",
        alerts=rows,
        therapies=therapies,
        given=given,
        status=given["status"],
        links=links,
        kinds=kinds,
        severities=SEVERITIES,
        ages=AGES,
        note_required=NOTE_REQUIRED,
        total=total,
        page=number,
        pages=max(1, -(-total // ALERTS_PAGE_SIZE)),
        can_acknowledge=has_role(user, *usecases.AcknowledgeAlert.ROLES),
    )


def _acknowledged(command, back, done: str):
    """Run an acknowledgement command; a refusal (but 404) is flashed, and the browser goes ``back``."""
    try:
        usecases.handle(command)
    except ApiError as exc:
        db.session.rollback()
        if exc.status == 404:
            raise
        flash(f"Not acknowledged: {exc.message}", "error")
        return back
    flash(done, "success")
    return back


@bp.post("/alerts/<alert_id>/acknowledge")
@login_required(*usecases.AcknowledgeAlert.ROLES)
def acknowledge_alert(alert_id: str):
    """Acknowledge an open alert: the ``AcknowledgeAlert`` command (a note for high and critical alerts)."""
    note = request.form.get("note", "")
    back = redirect(safe_next(request.form.get("back")) or url_for("web.alerts"))
    command = usecases.AcknowledgeAlert(alert_id=alert_id, by=page_user(), note=note)
    return _acknowledged(command, back, "Alert acknowledged.")


@bp.post("/alerts/acknowledge")
@login_required(*usecases.AcknowledgeAlerts.ROLES)
def acknowledge_alerts():
    """Acknowledge the ticked alerts with one note: the ``AcknowledgeAlerts`` command, all or none."""
    ids = [i for i in request.form.getlist("alert_id") if i]
    back = redirect(safe_next(request.form.get("back")) or url_for("web.alerts"))
    if not ids:
        flash("Tick the alerts to acknowledge first.", "error")
        return back
    command = usecases.AcknowledgeAlerts(alert_ids=ids, by=page_user(), note=request.form.get("note", ""))
    return _acknowledged(command, back, f"{len(set(ids))} alert{'s' if len(set(ids)) != 1 else ''} acknowledged.")


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
        head=audit.heads_summary(),
        page_size=AUDIT_PAGE_SIZE,
        can_verify=has_role(session_user(), *AUDIT_READERS),
    )


def _entry_fields(entry: AuditEntry) -> dict:
    """An entry's columns (``audit.COLUMNS``), its time in ISO 8601."""
    return {column: getattr(entry, column) for column in audit.COLUMNS} | {"at": iso(entry.at)}


@bp.get("/audit.csv", endpoint="audit_csv")
@login_required(*AUDIT_READERS)
def audit_csv():
    """The filtered audit trail as CSV, oldest first, every column including the hashes."""
    _given, _therapy, query = _audit_filters()

    def rows():
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(audit.COLUMNS)
        yield out.getvalue()
        if query is None:
            return
        for entry in db.session.execute(query.order_by(AuditEntry.seq)).yield_per(1000).scalars():
            out.seek(0)
            out.truncate()
            values = {**_entry_fields(entry), "data": json.dumps(entry.data or {}, sort_keys=True)}
            writer.writerow(["" if values[c] is None else values[c] for c in audit.COLUMNS])
            yield out.getvalue()

    response = Response(stream_with_context(rows()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="tether-audit.csv"'
    return response
