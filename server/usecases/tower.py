"""The control tower's read: the therapies a user may see, the late and at-risk first, a page at a time, with
their counts by phase, and the version a live refresh compares.

A therapy's deadline (``due``) is the earliest of its next timer (``next_due_at``) and its open tasks' due
times: a task keeps its due time once its escalation has fired, so late work stays late until it is done.
It is *late* when that moment has passed, *at risk* when it comes within ``AT_RISK``. The order is the
deadline, soonest (most overdue) first, therapies without one last, then the newest first; a page ends with a
cursor naming its last row, and the next page starts after it (keyset paging: a page never repeats or skips a
row because rows before it changed). The counts and the page are one statement over two covering indexes
(``ix_therapy_tower`` and the open tasks' earliest due times, ``ix_task_ready_due``), then the page's rows
are loaded: no query is made per row.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)

from engine.coi import CoiError, parse_coi
from engine.definition import PHASES
from server.access.auth import NEED_TO_KNOW_ROLES, visible_site_ids
from server.errors import BadRequest
from server.store.extensions import db
from server.store.models import Alert, OutboxEvent, Site, TaskRecord, Therapy, TherapyParty, User, UtcDateTime

from .reads import at_party_sites, summary_options

AT_RISK = timedelta(hours=24)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
STATUSES = ("active", "on_hold", "completed", "cancelled", "failed")
URGENCIES = ("late", "at_risk")
PARTY_FILTERS = ("apheresis", "manufacturing", "logistics")
NO_PHASE = "none"  # the phase filter's name for therapies that have none yet
MAX_QUERY = 100


@dataclass(frozen=True)
class ReadTower:
    """``by`` reads the control tower: ``filters`` (``site``, a party's site, ``process``, ``status`` with
    ``active`` meaning active and held, ``phase``, ``urgency`` late or at risk, ``q`` a search), the page after
    ``cursor``, of ``limit`` rows, as at ``now``."""

    by: User
    now: datetime
    filters: Mapping[str, str] = field(default_factory=dict)
    cursor: str | None = None
    limit: int = PAGE_SIZE


@dataclass
class TowerRow:
    """One therapy of the page, with its deadline and whether it is late or at risk, and its open alerts."""

    therapy: Therapy
    due: datetime | None
    late: bool
    at_risk: bool
    alerts: int


@dataclass
class Tower:
    """A page of the tower: its rows, the cursor of the next page (None on the last), how many therapies the
    filters match, and the counts the chips show (by phase, held, late, at risk) over the filters but the
    phase and urgency."""

    rows: list[TowerRow]
    next_cursor: str | None
    total: int
    phases: list[tuple[str, int]]
    held: int
    late: int
    at_risk: int


def therapy_search(user: User, text: str) -> ColumnElement[bool]:
    """The therapies ``text`` names: by id, by COI (any written form: with or without spaces, the check
    character or the barcode's ``&/``; part of one matches too), by the code of a site taking part, or by a
    patient reference (its beginning, any case) where ``user`` may know the patient (``access.auth``
    ``knows_patient``: admin and auditor, else the users of the treatment and apheresis sites)."""
    text = text.strip()[:MAX_QUERY]
    if not text:
        return true()
    squeezed = "".join(text.split()).upper().removeprefix("&/")
    try:
        coi = parse_coi(text).value
    except CoiError:
        coi = None
    conditions: list[ColumnElement[bool]] = [Therapy.id == text]
    if coi is not None:
        conditions.append(Therapy.coi == coi)
    elif len(squeezed) >= 3 and squeezed.isascii() and squeezed.isalnum():  # a COI has letters and digits only
        conditions.append(Therapy.coi.like(f"%{_escaped(squeezed)}%", escape="\\"))
    at_sites = select(TherapyParty.therapy_id).join(Site, Site.id == TherapyParty.site_id)
    conditions.append(Therapy.id.in_(at_sites.where(func.upper(Site.code) == text.upper())))
    named = func.upper(Therapy.patient_reference).like(f"{_escaped(text.upper())}%", escape="\\")
    known = _knows_patient(user)
    if known is not None:
        conditions.append(and_(named, known))
    return or_(*conditions)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _knows_patient(user: User) -> ColumnElement[bool] | None:
    """Where ``user`` may know a therapy's patient (``access.auth.knows_patient`` as a condition); None when
    nowhere."""
    if any(role in NEED_TO_KNOW_ROLES for role in user.roles):
        return true()
    mine = [site.id for site in user.sites]
    if not mine:
        return None
    collected_here = select(TherapyParty.therapy_id).where(
        TherapyParty.party == "apheresis", TherapyParty.site_id.in_(mine)
    )
    return or_(Therapy.site_id.in_(mine), Therapy.id.in_(collected_here))


def _task_due():
    """The open tasks' earliest due time per therapy (read from ``ix_task_ready_due`` alone)."""
    return (
        select(TaskRecord.therapy_id.label("therapy_id"), func.min(TaskRecord.due_at).label("task_due"))
        .where(TaskRecord.status == "ready", TaskRecord.due_at.is_not(None))
        .group_by(TaskRecord.therapy_id)
        .subquery("task_due")
    )


def _due(task_due) -> ColumnElement[Any]:
    """The earlier of the next timer and the earliest open task's due time (either may be missing)."""
    timer, task = Therapy.next_due_at, type_coerce(task_due.c.task_due, UtcDateTime)
    return type_coerce(
        case(
            (timer.is_(None), task),
            (task.is_(None), timer),
            (task < timer, task),
            else_=timer,
        ),
        UtcDateTime,
    )


def _filtered(user: User, filters: Mapping[str, str], columns: Select) -> Select:
    """``columns`` of the therapies ``user`` may see that the filters but phase and urgency keep (unordered)."""
    query = columns
    status = filters.get("status") or "active"
    if status == "active":
        query = query.where(Therapy.status.in_(("active", "on_hold")))
    elif status != "all":
        query = query.where(Therapy.status == status)
    if filters.get("site"):
        query = query.where(Therapy.site_id.in_(select(Site.id).where(Site.code == filters["site"])))
    if filters.get("process"):
        query = query.where(Therapy.process_key == filters["process"])
    query = at_party_sites(query, {party: filters.get(party, "") for party in PARTY_FILTERS})
    if filters.get("q"):
        query = query.where(therapy_search(user, filters["q"]))
    sites = visible_site_ids(user)
    if sites is None:
        return query
    # (as ``reads.therapies_for`` keeps a list to the user's sites, as a condition rather than a join, so that
    # the therapies are read from ix_therapy_tower alone)
    return query.where(Therapy.id.in_(select(TherapyParty.therapy_id).where(TherapyParty.site_id.in_(sites))))


def read_tower(query: ReadTower) -> Tower:
    """The page of the tower ``query`` asks for; 400 for a cursor this server did not hand out or a filter
    value that is none of its choices."""
    filters, now = query.filters, query.now
    _check(filters)
    after = _decode(query.cursor) if query.cursor else None
    limit = max(1, min(MAX_PAGE_SIZE, query.limit))
    soon = now + AT_RISK
    task_due = _task_due()
    # Every therapy the filters keep (but the phase and urgency) with its deadline, computed once and read twice
    # by one statement: for the counts by phase, and for the page (the databases materialise a common table
    # expression that is used twice).
    kept = _filtered(
        query.by,
        filters,
        select(Therapy.id, Therapy.phase, Therapy.status, Therapy.created_at, _due(task_due).label("due")).outerjoin(
            task_due, task_due.c.therapy_id == Therapy.id
        ),
    ).cte("kept")
    due = type_coerce(kept.c.due, UtcDateTime)
    late = and_(due.is_not(None), due <= literal(now, UtcDateTime))
    at_risk = and_(due.is_not(None), due > literal(now, UtcDateTime), due <= literal(soon, UtcDateTime))
    phase, urgency = filters.get("phase", ""), filters.get("urgency", "")
    listed = select(
        literal(0).label("part"),
        kept.c.id,
        due.label("due"),
        kept.c.phase,
        literal(0).label("n"),
        literal(0).label("held"),
        literal(0).label("late"),
        literal(0).label("at_risk"),
    )
    if phase:
        listed = listed.where(kept.c.phase.is_(None) if phase == NO_PHASE else kept.c.phase == phase)
    if urgency:
        listed = listed.where(late if urgency == "late" else at_risk)
    if after is not None:
        listed = listed.where(_after(due, kept.c.created_at, kept.c.id, after))
    first = listed.order_by(due.is_(None), due, kept.c.created_at.desc(), kept.c.id).limit(limit + 1).subquery()
    counted = select(
        literal(1),
        literal(None, String),
        literal(None, UtcDateTime),
        kept.c.phase,
        func.count(),
        func.sum(case((kept.c.status == "on_hold", 1), else_=0)),
        func.sum(case((late, 1), else_=0)),
        func.sum(case((at_risk, 1), else_=0)),
    ).group_by(kept.c.phase)
    answer = db.session.execute(union_all(select(*first.c), counted)).all()
    groups = [r for r in answer if r.part == 1]
    page = [r for r in answer if r.part == 0]
    chosen = [g for g in groups if not phase or (g.phase or NO_PHASE) == phase]
    total = sum(int({"late": g.late, "at_risk": g.at_risk}.get(urgency, g.n) or 0) for g in chosen)
    more = len(page) > limit
    page = page[:limit]
    ids = [r.id for r in page]
    loaded = {
        t.id: t
        for t in db.session.execute(select(Therapy).options(*summary_options()).where(Therapy.id.in_(ids))).scalars()
    }
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
    rows = [
        TowerRow(
            therapy=loaded[r.id],
            due=r.due,
            late=r.due is not None and r.due <= now,
            at_risk=r.due is not None and now < r.due <= soon,
            alerts=alerts.get(r.id, 0),
        )
        for r in page
    ]
    return Tower(
        rows=rows,
        next_cursor=_encode(rows[-1]) if more and rows else None,
        total=total,
        phases=_ordered_phases(groups),
        held=sum(int(g.held or 0) for g in groups),
        late=sum(int(g.late or 0) for g in groups),
        at_risk=sum(int(g.at_risk or 0) for g in groups),
    )


def _ordered_phases(groups) -> list[tuple[str, int]]:
    """(phase, count) in journey order (``engine.definition.PHASES``), other phases after them by name, and
    therapies without a phase last (as ``none``)."""
    counts: dict[str, int] = {}
    for g in groups:
        counts[g.phase or NO_PHASE] = counts.get(g.phase or NO_PHASE, 0) + int(g.n)
    order = {name: i for i, name in enumerate((*PHASES, "completed"))}
    return sorted(counts.items(), key=lambda item: (item[0] == NO_PHASE, order.get(item[0], len(order)), item[0]))


def _after(due: ColumnElement[Any], created_at, therapy_id, after: dict) -> ColumnElement[bool]:
    """The rows after the cursor's row in the tower's order (deadline, undated last; newest first; id)."""
    created = literal(after["created"], UtcDateTime)
    created_at = type_coerce(created_at, UtcDateTime)
    later_same_due = or_(created_at < created, and_(created_at == created, therapy_id > after["id"]))
    if after["due"] is None:
        return and_(due.is_(None), later_same_due)
    moment = literal(after["due"], UtcDateTime)
    return or_(due.is_(None), due > moment, and_(due == moment, later_same_due))


def _encode(row: TowerRow) -> str:
    payload = {
        "d": row.due.isoformat() if row.due else None,
        "c": row.therapy.created_at.isoformat(),
        "i": row.therapy.id,
    }
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def _decode(cursor: str) -> dict:
    """The row a cursor names; 400 ``invalid_cursor`` for anything this server did not hand out."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        return {
            "due": datetime.fromisoformat(payload["d"]) if payload["d"] is not None else None,
            "created": datetime.fromisoformat(payload["c"]),
            "id": _text(payload["i"]),
        }
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError, AttributeError):
        raise BadRequest(
            "cursor is not one this server handed out.", code="invalid_cursor", details={"field": "cursor"}
        ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 36:
        raise ValueError("not an id")
    return value


def _check(filters: Mapping[str, str]) -> None:
    status = filters.get("status") or "active"
    if status not in (*STATUSES, "all"):
        raise BadRequest(
            f"status is one of {', '.join(STATUSES)} or all.", code="invalid_request", details={"field": "status"}
        )
    if filters.get("urgency") and filters["urgency"] not in URGENCIES:
        raise BadRequest("urgency is late or at_risk.", code="invalid_request", details={"field": "urgency"})


def tower_version() -> int:
    """What a live refresh compares: the id of the newest event (every change a tower shows records one)."""
    return int(db.session.execute(select(func.max(OutboxEvent.id))).scalar() or 0)
