"""The programme's metrics: therapies started, completed and cancelled, vein-to-vein time, on-time rate against the
booked dates, excursions, escalations and COI mismatches, by treatment site, process or month.

A therapy counts in the period its therapy started in (``from`` inclusive, ``to`` exclusive) and in the group of its
treatment site, its process or the month it started. Site-scoped callers get the therapies their sites take part
in (any party), as everywhere.

- Vein-to-vein: from the last collection to the infusion (``compliance.record.collection_and_infusion``), in hours,
  over the therapies infused; p50 and p90 by nearest rank.
- On-time rate: of the milestones that happened and had a booked place, the share that happened by the end of the
  booked slot: the collection (apheresis booking), the manufacturing start (the first ``mes.manufacturing_started``
  message, manufacturing booking) and the infusion (infusion booking). None when nothing could be judged.
- Excursions, escalations, COI mismatches: the therapy's audit entries ``condition.excursion``, ``task.escalated``
  and ``coi.mismatch``.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import func, select

from server.access.auth import check_roles
from server.compliance.record import collection_and_infusion
from server.errors import Invalid
from server.store.extensions import db
from server.store.models import AuditEntry, Booking, Site, Slot, TaskRecord, Therapy, User

from .checks import audits_refusals
from .reads import therapies_for

GROUPINGS = ("site", "process", "month")
COUNTED = {"condition.excursion": "excursions", "task.escalated": "escalations", "coi.mismatch": "coi_mismatches"}
MANUFACTURING_STARTED = "mes.manufacturing_started"
CSV_COLUMNS = (
    "key",
    "started",
    "completed",
    "cancelled",
    "vein_to_vein_p50_hours",
    "vein_to_vein_p90_hours",
    "on_time_rate",
    "excursions",
    "escalations",
    "coi_mismatches",
)
CHUNK = 500


@dataclass(frozen=True)
class ReadMetrics:
    """``by`` reads the metrics of the therapies started from ``start`` (inclusive) to ``end`` (exclusive), either
    open, grouped by ``group_by`` (site, process or month)."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "planner", "qa", "auditor", "admin")

    by: User
    start: datetime | None = None
    end: datetime | None = None
    group_by: str = "site"


@audits_refusals
def read_metrics(query: ReadMetrics) -> list[dict[str, Any]]:
    """The groups, by key; 403 without a metrics role, 422 for an unknown grouping or an empty period."""
    check_roles(query.by, query.ROLES)
    if query.group_by not in GROUPINGS:
        raise Invalid(
            f"group_by is one of {', '.join(GROUPINGS)}.", code="invalid_request", details={"field": "group_by"}
        )
    if query.start is not None and query.end is not None and query.end <= query.start:
        raise Invalid("'to' must come after 'from'.", code="invalid_request", details={"field": "to"})
    columns = select(Therapy.id, Therapy.site_id, Therapy.process_key, Therapy.status, Therapy.created_at)
    if query.start is not None:
        columns = columns.where(Therapy.created_at >= query.start)
    if query.end is not None:
        columns = columns.where(Therapy.created_at < query.end)
    rows = db.session.execute(therapies_for(query.by, columns)).all()
    sites = dict(db.session.execute(select(Site.id, Site.code)).all())
    key_of = {
        "site": lambda r: sites.get(r.site_id, "?"),
        "process": lambda r: r.process_key,
        "month": lambda r: r.created_at.strftime("%Y-%m"),
    }[query.group_by]
    therapies = {r.id: r for r in rows}
    facts = _facts(list(therapies))
    groups: dict[str, dict[str, Any]] = {}
    for therapy_id, row in therapies.items():
        group = groups.setdefault(key_of(row), _empty())
        group["started"] += 1
        group["completed"] += row.status == "completed"
        group["cancelled"] += row.status == "cancelled"
        fact = facts.get(therapy_id, {})
        if fact.get("hours") is not None:
            group["_hours"].append(fact["hours"])
        group["_on_time"] += fact.get("on_time", 0)
        group["_judged"] += fact.get("judged", 0)
        for name in COUNTED.values():
            group[name] += fact.get(name, 0)
    return [_finished(key, group) for key, group in sorted(groups.items())]


def as_csv(groups: list[dict[str, Any]]) -> str:
    """The groups as CSV, one row each, with the columns ``CSV_COLUMNS``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in groups:
        hours = g["vein_to_vein_hours"]
        writer.writerow(
            [
                g["key"],
                g["started"],
                g["completed"],
                g["cancelled"],
                _blank(hours["p50"]),
                _blank(hours["p90"]),
                _blank(g["on_time_rate"]),
                g["excursions"],
                g["escalations"],
                g["coi_mismatches"],
            ]
        )
    return out.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _empty() -> dict[str, Any]:
    return {
        "started": 0,
        "completed": 0,
        "cancelled": 0,
        "excursions": 0,
        "escalations": 0,
        "coi_mismatches": 0,
        "_hours": [],
        "_on_time": 0,
        "_judged": 0,
    }


def _finished(key: str, group: dict[str, Any]) -> dict[str, Any]:
    hours = sorted(group.pop("_hours"))
    on_time, judged = group.pop("_on_time"), group.pop("_judged")
    return {
        "key": key,
        "started": group["started"],
        "completed": group["completed"],
        "cancelled": group["cancelled"],
        "vein_to_vein_hours": {"p50": _rank(hours, 0.5), "p90": _rank(hours, 0.9)},
        "on_time_rate": round(on_time / judged, 3) if judged else None,
        "excursions": group["excursions"],
        "escalations": group["escalations"],
        "coi_mismatches": group["coi_mismatches"],
    }


def _rank(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none), to one decimal."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * share) - 1))], 1)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _facts(ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per therapy: vein-to-vein hours, milestones judged and on time, and the counted audit entries."""
    facts: dict[str, dict[str, Any]] = defaultdict(dict)
    for chunk in _chunks(ids):
        tasks: dict[str, list[TaskRecord]] = defaultdict(list)
        for task in db.session.execute(
            select(TaskRecord)
            .where(TaskRecord.therapy_id.in_(chunk), TaskRecord.status == "completed")
            .order_by(TaskRecord.completed_at, TaskRecord.created_at)
        ).scalars():
            tasks[task.therapy_id].append(task)
        started = dict(
            db.session.execute(
                select(AuditEntry.therapy_id, func.min(AuditEntry.at))
                .where(
                    AuditEntry.therapy_id.in_(chunk),
                    AuditEntry.action == "message.received",
                    AuditEntry.data["name"].as_string() == MANUFACTURING_STARTED,
                )
                .group_by(AuditEntry.therapy_id)
            ).all()
        )
        booked: dict[str, dict[str, datetime]] = defaultdict(dict)
        for therapy_id, kind, end in db.session.execute(
            select(Booking.therapy_id, Booking.kind, Slot.end_at)
            .join(Slot, Slot.id == Booking.slot_id)
            .where(Booking.therapy_id.in_(chunk), Booking.status == "booked")
        ).all():
            booked[therapy_id][kind] = end
        for counted_id, action, count in db.session.execute(
            select(AuditEntry.therapy_id, AuditEntry.action, func.count())
            .where(AuditEntry.therapy_id.in_(chunk), AuditEntry.action.in_(tuple(COUNTED)))
            .group_by(AuditEntry.therapy_id, AuditEntry.action)
        ).all():
            if counted_id is not None:
                facts[counted_id][COUNTED[action]] = count
        for therapy_id in chunk:
            collection_at, _source, infusion_at = collection_and_infusion(tasks.get(therapy_id, []))
            fact = facts[therapy_id]
            if collection_at is not None and infusion_at is not None:
                fact["hours"] = (infusion_at - collection_at).total_seconds() / 3600
            milestones = {"apheresis": collection_at, "manufacturing": started.get(therapy_id), "infusion": infusion_at}
            judged = [(m, booked[therapy_id][k]) for k, m in milestones.items() if m and k in booked[therapy_id]]
            fact["judged"] = len(judged)
            fact["on_time"] = sum(1 for moment, end in judged if _aware(moment) <= _aware(end))
    return facts


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
