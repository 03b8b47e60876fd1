"""The control tower: every therapy visible to you, one row each, counts by stage, updated live."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import render_template, request
from sqlalchemy import func, select

from server.integration import stream
from server.store.extensions import db
from server.store.models import Alert, ProcessDefinition, Site, TaskRecord, Therapy
from server.usecases.reads import at_party_sites, summary_options, therapies_for

from . import bp
from .network import FILTERED_PARTIES, party_sites
from .present import parse_time
from .session import STARTERS, has_role, login_required, page_user
from .slots import UTILISATION_DAYS, utilisation
from .therapy_pages import startable

STATUSES = ("active", "on_hold", "completed", "cancelled", "failed")
# How the status filter names each status; "active" lists the held therapies too (marked held), as they are
# still under way.
STATUS_NAMES = {"active": "active (held too)", "on_hold": "on hold"}
LIVE_POLL_SECONDS = 3
PHASE_NAMES = {"follow-up": "Follow-up"}


@bp.app_template_filter("phase_name")
def phase_name(phase: str | None) -> str:
    """A phase as people read it: ``manufacturing`` is "Manufacturing", ``follow-up`` "Follow-up"."""
    if not phase:
        return "—"
    return PHASE_NAMES.get(phase) or phase.replace("-", " ").capitalize()


def _filters() -> dict:
    status = request.args.get("status", "active")
    return {
        "site": request.args.get("site", ""),
        **{party: request.args.get(party, "") for party in FILTERED_PARTIES},
        "process": request.args.get("process", ""),
        "status": status if status in STATUSES or status == "all" else "active",
    }


def dashboard_rows(user, filters: dict) -> tuple[list[dict], Counter]:
    """One row per therapy the user may see (one of their sites takes part in it), newest first, and the count
    of therapies per stage."""
    query = select(Therapy).options(*summary_options())
    if filters["status"] == "active":
        query = query.where(Therapy.status.in_(("active", "on_hold")))
    elif filters["status"] != "all":
        query = query.where(Therapy.status == filters["status"])
    if filters["site"]:
        query = query.join(Site).where(Site.code == filters["site"])
    if filters["process"]:
        query = query.where(Therapy.process_key == filters["process"])
    query = at_party_sites(query, {party: filters[party] for party in FILTERED_PARTIES})
    therapies = db.session.execute(therapies_for(user, query).limit(1000)).scalars().all()
    ids = [t.id for t in therapies]
    alerts = (
        dict(
            db.session.execute(
                select(Alert.therapy_id, func.count())
                .where(Alert.therapy_id.in_(ids), Alert.status == "open")
                .group_by(Alert.therapy_id)
            ).all()
        )
        if ids
        else {}
    )
    task_due = (
        dict(
            db.session.execute(
                select(TaskRecord.therapy_id, func.min(TaskRecord.due_at))
                .where(TaskRecord.therapy_id.in_(ids), TaskRecord.status == "ready")
                .group_by(TaskRecord.therapy_id)
            ).all()
        )
        if ids
        else {}
    )
    rows: list[dict[str, Any]] = []
    for therapy in therapies:
        dues = [d for d in (parse_time(therapy.next_due_at), parse_time(task_due.get(therapy.id))) if d]
        rows.append({"therapy": therapy, "next_due": min(dues) if dues else None, "alerts": alerts.get(therapy.id, 0)})
    return rows, Counter(r["therapy"].stage or "" for r in rows)


@bp.get("/dashboard")
@login_required()
def dashboard():
    """The control tower page."""
    user = page_user()
    filters = _filters()
    rows, stages = dashboard_rows(user, filters)
    processes = db.session.execute(select(ProcessDefinition.key).distinct().order_by(ProcessDefinition.key)).scalars()
    starting = has_role(user, *STARTERS)
    start_processes, start_sites = startable(user) if starting else ([], [])
    return render_template(
        "web/dashboard.html",
        rows=rows,
        stages=stages,
        filters=filters,
        processes=list(processes),
        filter_sites=party_sites(user),
        filtered_parties=FILTERED_PARTIES,
        statuses=STATUSES,
        status_names=STATUS_NAMES,
        start_processes=start_processes,
        start_sites=start_sites,
        start_party_sites=party_sites() if start_sites else {},
        poll_seconds=LIVE_POLL_SECONDS,
        utilisation=utilisation(user),
        utilisation_days=UTILISATION_DAYS,
    )


@bp.get("/dashboard/rows")
@login_required()
def dashboard_fragment():
    """The table body and the stage counts alone, for the page's live refresh."""
    rows, stages = dashboard_rows(page_user(), _filters())
    return render_template("web/_dashboard_rows.html", rows=rows, stages=stages)


@bp.get("/live/events")
@login_required()
def live_events():
    """The live event stream (``server.integration.stream``, as ``GET /api/v1/events`` serves it) of what the
    session's user may see, resumable with ``Last-Event-ID``.

    429 when too many streams are open: the page then refreshes itself every few seconds instead.
    """
    return stream.open_stream(page_user(), stream.resume_point(request.headers.get("Last-Event-ID")))
