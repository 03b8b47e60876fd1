"""The control tower: every therapy visible to you, the late and at-risk first, a page at a time, with chips of
counts by phase to filter by, a search, and a cheap refresh the page polls for live updates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, render_template, request, url_for
from sqlalchemy import select

from server.access.auth import NEED_TO_KNOW_ROLES
from server.clock import clock
from server.errors import BadRequest
from server.integration import stream
from server.store.extensions import db
from server.store.models import ProcessDefinition, Therapy
from server.usecases.tower import (
    NO_PHASE,
    PAGE_SIZE,
    PARTY_FILTERS,
    STATUSES,
    URGENCIES,
    ReadTower,
    read_tower,
    tower_version,
)

from . import bp
from .network import party_sites
from .present import duration
from .session import STARTERS, has_role, login_required, page_user
from .slots import UTILISATION_DAYS, utilisation
from .therapy_pages import startable

# How the status filter names each status; "active" lists the held therapies too (marked held), as they are
# still under way.
STATUS_NAMES = {"active": "active (held too)", "on_hold": "on hold"}
# How often the page asks whether anything changed (a cheap question: see ``dashboard_fragment``).
LIVE_POLL_SECONDS = 3
# The refresh's version also turns every minute, so that deadlines passing show without an event.
VERSION_SECONDS = 60
PHASE_NAMES = {"follow-up": "Follow-up", NO_PHASE: "No phase yet"}
FILTERS = ("q", "site", *PARTY_FILTERS, "process", "status", "phase", "urgency")


@bp.app_template_filter("phase_name")
def phase_name(phase: str | None) -> str:
    """A phase as people read it: ``manufacturing`` is "Manufacturing", ``follow-up`` "Follow-up"."""
    if not phase:
        return "—"
    return PHASE_NAMES.get(phase) or phase.replace("-", " ").capitalize()


def _filters() -> dict[str, str]:
    """The tower's filters from the query string (empty: not filtered); no status, or an unknown one, lists the
    active therapies and the held ones."""
    filters = {name: request.args.get(name, "").strip()[:100] for name in FILTERS}
    if filters["status"] not in (*STATUSES, "all"):
        filters["status"] = ""  # the default: active (held too)
    if filters["urgency"] not in URGENCIES:
        filters["urgency"] = ""
    return filters


def _limit() -> int:
    raw = request.args.get("limit", "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) <= 200 else PAGE_SIZE


def vein_to_vein(therapy: Therapy, now: datetime) -> dict[str, Any]:
    """The vein-to-vein column: days from collection to infusion, or since collection while not infused."""
    if therapy.collected_at is None:
        return {"state": "not_started", "days": None, "text": "—", "title": "Not collected yet"}
    if therapy.infused_at is not None:
        span = therapy.infused_at - therapy.collected_at
        return {
            "state": "stopped",
            "days": span.total_seconds() / 86400,
            "text": f"{span.total_seconds() / 86400:.1f} d",
            "title": f"Collection to infusion: {duration(span)}",
        }
    end = therapy.ended_at if therapy.status != "active" and therapy.ended_at else now
    span = end - therapy.collected_at
    return {
        "state": "running" if end is now else "stopped",
        "days": span.total_seconds() / 86400,
        "text": f"{span.total_seconds() / 86400:.1f} d",
        "title": f"Since collection: {duration(span)}" + ("" if end is now else " (ended without infusion)"),
    }


def version(now: datetime) -> str:
    """The tower's version: the newest event's id and the minute (see ``VERSION_SECONDS``)."""
    return f"{tower_version()}.{int(now.timestamp()) // VERSION_SECONDS}"


def _tower(user, filters: dict[str, str]) -> dict[str, Any]:
    """What the rows fragment draws, for ``user`` with ``filters`` (and the request's cursor)."""
    now = clock()()
    cursor = request.args.get("cursor") or None
    wanted: dict[str, Any] = {k: v for k, v in filters.items() if v}
    try:
        tower = read_tower(ReadTower(by=user, now=now, filters=wanted, cursor=cursor, limit=_limit()))
    except BadRequest:  # a cursor this server did not hand out (edited, or truncated): the first page
        cursor = None
        tower = read_tower(ReadTower(by=user, now=now, filters=wanted, limit=_limit()))

    def link(**changes) -> str:
        """The tower with the filters changed (an empty value drops one), from its first page."""
        return url_for("web.dashboard", **{k: v for k, v in {**wanted, **changes}.items() if v})

    return {
        "tower": tower,
        "rows": tower.rows,
        "filters": filters,
        "now": now,
        "cursor": cursor,
        "link": link,
        "next_url": url_for("web.dashboard", **wanted, cursor=tower.next_cursor) if tower.next_cursor else None,
        "first_url": link() if cursor else None,
        "v2v": vein_to_vein,
        "version": version(now),
    }


@bp.get("/dashboard")
@login_required()
def dashboard():
    """The control tower page."""
    user = page_user()
    filters = _filters()
    shown = _tower(user, filters)
    processes = db.session.execute(select(ProcessDefinition.key).distinct().order_by(ProcessDefinition.key)).scalars()
    starting = has_role(user, *STARTERS)
    start_processes, start_sites = startable(user) if starting else ([], [])
    wanted: dict[str, Any] = {k: v for k, v in filters.items() if v}
    return render_template(
        "web/dashboard.html",
        **shown,
        processes=list(processes),
        filter_sites=party_sites(user),
        filtered_parties=PARTY_FILTERS,
        statuses=STATUSES,
        status_names=STATUS_NAMES,
        start_processes=start_processes,
        start_sites=start_sites,
        start_party_sites=party_sites() if start_sites else {},
        poll_seconds=LIVE_POLL_SECONDS,
        can_search_patients=any(r in NEED_TO_KNOW_ROLES for r in user.roles) or bool(user.sites),
        rows_url=url_for("web.dashboard_fragment", **wanted, cursor=shown["cursor"]),
        utilisation=utilisation(user),
        utilisation_days=UTILISATION_DAYS,
    )


@bp.get("/dashboard/rows")
@login_required()
def dashboard_fragment():
    """The chips, the table and its paging alone, for the page's live refresh.

    With ``since=<version>`` (the ``X-Tower-Version`` of the last answer) it answers 204 and no body while
    nothing has changed: one indexed read of the newest event's id, so every open tab may ask every few
    seconds without holding anything on the server between questions.
    """
    user = page_user()
    since = request.args.get("since")
    if since is not None:
        current = version(clock()())
        if since == current:
            unchanged = Response(status=204)
            unchanged.headers["X-Tower-Version"] = current
            unchanged.headers["Cache-Control"] = "no-store"
            return unchanged
    shown = _tower(user, _filters())
    answer = Response(render_template("web/_dashboard_rows.html", **shown))
    answer.headers["X-Tower-Version"] = shown["version"]
    answer.headers["Cache-Control"] = "no-store"
    return answer


@bp.get("/live/events")
@login_required()
def live_events():
    """The live event stream (``server.integration.stream``, as ``GET /api/v1/events`` serves it) of what the
    session's user may see, resumable with ``Last-Event-ID``; 429 when too many streams are open. The control
    tower no longer listens to it (it polls ``/dashboard/rows?since=``), so that no open tab holds a stream."""
    return stream.open_stream(page_user(), stream.resume_point(request.headers.get("Last-Event-ID")))
