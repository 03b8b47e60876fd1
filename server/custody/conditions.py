"""Condition monitoring: temperature readings checked against the range of where the therapy is.

The allowed range is that of the activity the therapy is in (BPMN property ``conditionRange``), else the
process's. Readings are narrow rows indexed by (therapy_id, recorded_at) and inserted in bulk, so a
shipment logging every minute for days stays cheap to store and to read back as a series. An excursion
raises a high-severity alert, emits ``condition.excursion`` and, when the process waits for the message
``condition.excursion``, delivers it, all in the transaction that stores the readings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select

from server.clock import clock
from server.errors import Invalid
from server.integration import outbox
from server.oversight.alerts import raise_alert
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, ConditionReading, Therapy
from server.store.uow import unit_of_work

MAX_BATCH = 1000
FUTURE_TOLERANCE = timedelta(minutes=5)
EXCURSION_MESSAGE = "condition.excursion"
ALERT_KIND = "condition_excursion"


def allowed_range(therapy: Therapy) -> tuple[list[float] | None, str | None]:
    """The range (low, high in °C) that applies now, and the activity it comes from (None: the process's)."""
    info = therapy.definition.info or {}
    activities = info.get("activities") or {}
    for activity_id in therapy.current_activities or []:
        found = (activities.get(activity_id) or {}).get("condition_range")
        if found:
            return [float(found[0]), float(found[1])], activity_id
    found = info.get("condition_range")
    return ([float(found[0]), float(found[1])], None) if found else (None, None)


def _iso(moment: datetime) -> str:
    from server.clock import iso

    return iso(moment) or ""


def _distance(temperature: float, limits: list) -> float:
    low, high = limits
    return max(low - temperature if low is not None else 0.0, temperature - high if high is not None else 0.0, 0.0)


def _outside(temperature: float, limits: list | None) -> bool:
    return limits is not None and _distance(temperature, limits) > 0


def narrowed(limits: list[float] | None, low: float | None, high: float | None) -> list | None:
    """``limits`` narrowed to also lie within ``low``..``high`` (either may be None: no bound on that side), as a
    shipment's own range narrows the process's: a reading must satisfy both. None when neither bounds anything."""
    if low is None and high is None:
        return limits
    process_low, process_high = limits if limits is not None else (None, None)
    lows = [v for v in (process_low, low) if v is not None]
    highs = [v for v in (process_high, high) if v is not None]
    return [max(lows) if lows else None, min(highs) if highs else None]


def describe_range(limits: list) -> str:
    """``2..8 °C``, ``at most -150 °C`` or ``at least 15 °C``."""
    low, high = limits
    if low is not None and high is not None:
        return f"{low:g}..{high:g} °C"
    return f"at most {high:g} °C" if high is not None else f"at least {low:g} °C"


TellProcess = Callable[[Therapy, str, dict, str], bool]


def record_readings(
    therapy: Therapy,
    readings: list[dict[str, Any]],
    actor: str,
    *,
    tell_process: TellProcess,
    within: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """Store ``readings`` (one or up to MAX_BATCH) and act on an excursion among them; one transaction.

    A reading must lie in the range that applies now and, when given, ``within`` (a shipment's own range).

    ``tell_process(therapy, message, details, actor)`` delivers the excursion to the process when it waits
    for it, inside this transaction, and says whether it did (the workflow's ``deliver_waiting_message``).
    """
    now = clock()()
    for index, reading in enumerate(readings):
        if reading["recorded_at"] > now + FUTURE_TOLERANCE:
            raise Invalid(
                "A reading's recorded_at lies in the future.",
                code="invalid_request",
                details={"fields": {"recorded_at": ["must not lie in the future"]}, "index": index},
            )
    process_limits, range_activity = allowed_range(therapy)
    limits = narrowed(process_limits, *within)
    activity_id = range_activity or next(iter(therapy.current_activities or []), None)
    rows = [
        {
            "therapy_id": therapy.id,
            "sensor_id": r["sensor_id"],
            "shipment_id": r.get("shipment_id"),
            "recorded_at": r["recorded_at"],
            "temperature_c": float(r["temperature_c"]),
            "excursion": _outside(r["temperature_c"], limits),
            "activity_id": activity_id,
        }
        for r in readings
    ]
    outside = [(row, reading) for row, reading in zip(rows, readings, strict=True) if row["excursion"]]
    result: dict[str, Any] = {
        "excursion": bool(outside),
        "range": limits,
        "activity_id": activity_id,
        "recorded": len(rows),
        "excursions": len(outside),
    }
    with unit_of_work():
        if outside and db.engine.dialect.name == "postgresql":
            # Two loggers' excursions at once must not both find no open alert and raise one each: the second
            # waits here for the first and reads the therapy as the first left it.
            db.session.execute(
                select(Therapy)
                .where(Therapy.id == therapy.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).scalar_one()
        if len(rows) == 1:
            reading_row = ConditionReading(**rows[0])
            db.session.add(reading_row)
            db.session.flush()
            result["id"] = reading_row.id
        else:
            db.session.execute(insert(ConditionReading), rows)
        audit.append(
            actor,
            "condition.recorded",
            "therapy",
            therapy.id,
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            data=_audit_summary(rows, readings, limits, result.get("id")),
        )
        if outside:
            assert limits is not None  # a reading is outside only of some range
            worst_row, worst = max(outside, key=lambda pair: _distance(pair[0]["temperature_c"], limits))
            result.update(
                _handle_excursion(therapy, worst_row, worst, limits, activity_id, actor, len(outside), tell_process)
            )
    return result


def _audit_summary(rows: list[dict], readings: list[dict], limits, reading_id) -> dict[str, Any]:
    """What the audit entry keeps of a batch: its extent and a digest binding the exact values."""
    canonical = [[row["sensor_id"], _iso(row["recorded_at"]), row["temperature_c"]] for row in rows]
    temperatures = [row["temperature_c"] for row in rows]
    summary = {
        "count": len(rows),
        "first_at": min(c[1] for c in canonical),
        "last_at": max(c[1] for c in canonical),
        "min_c": min(temperatures),
        "max_c": max(temperatures),
        "range": limits,
        "excursions": sum(1 for row in rows if row["excursion"]),
        "sensors": sorted({row["sensor_id"] for row in rows}),
        "locations": sorted({r["location"] for r in readings if r.get("location")}),
        "digest": hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest(),
    }
    if len(rows) == 1:
        summary.update(
            {
                "reading_id": reading_id,
                "sensor_id": rows[0]["sensor_id"],
                "shipment_id": rows[0]["shipment_id"],
                "temperature_c": rows[0]["temperature_c"],
                "recorded_at": canonical[0][1],
                "location": readings[0].get("location"),
            }
        )
    return summary


def _handle_excursion(
    therapy: Therapy,
    row: dict,
    reading: dict,
    limits: list,
    activity_id: str | None,
    actor: str,
    count: int,
    tell_process: TellProcess,
) -> dict[str, Any]:
    """Alert, publish and tell the process; an excursion already under an open alert (of the same step, and of the
    same shipment: each container is looked at on its own) is not raised twice."""
    waits = any(w.get("type") == "message" and w.get("name") == EXCURSION_MESSAGE for w in therapy.waits or [])
    if not waits:
        open_alerts = db.session.execute(
            select(Alert.id, Alert.data).where(
                Alert.therapy_id == therapy.id,
                Alert.kind == ALERT_KIND,
                Alert.status == "open",
                Alert.activity_id.is_(None) if activity_id is None else Alert.activity_id == activity_id,
            )
        ).all()
        for open_alert, data in open_alerts:
            if (data or {}).get("shipment_id") == row["shipment_id"]:
                return {"alert_id": open_alert, "new_alert": False, "delivered": False}
    direction = "above" if limits[1] is not None and row["temperature_c"] > limits[1] else "below"
    details = {
        "temperature_c": row["temperature_c"],
        "recorded_at": _iso(row["recorded_at"]),
        "sensor_id": row["sensor_id"],
        "shipment_id": row["shipment_id"],
        "location": reading.get("location"),
        "range": limits,
        "activity_id": activity_id,
        "readings_outside": count,
    }
    alert = raise_alert(
        therapy,
        ALERT_KIND,
        f"Temperature excursion: {row['temperature_c']:g} °C is {direction} the allowed {describe_range(limits)}.",
        actor,
        severity="high",
        activity_id=activity_id,
        data=details,
    )
    details["alert_id"] = alert.id
    outbox.record_event("condition.excursion", therapy, details, actor)
    delivered = tell_process(therapy, EXCURSION_MESSAGE, details, actor) if waits else False
    return {"alert_id": alert.id, "new_alert": True, "delivered": delivered}


# -- reading the series ------------------------------------------------------------------------------
SERIES_COLUMNS = (
    ConditionReading.id,
    ConditionReading.recorded_at,
    ConditionReading.temperature_c,
    ConditionReading.sensor_id,
    ConditionReading.shipment_id,
    ConditionReading.excursion,
    ConditionReading.activity_id,
)


def series_query(
    therapy_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    after: tuple[datetime, int] | None = None,
):
    """The readings of one therapy in [start, end), oldest first, after a keyset cursor (index range scan)."""
    query = select(*SERIES_COLUMNS).where(ConditionReading.therapy_id == therapy_id)
    if start is not None:
        query = query.where(ConditionReading.recorded_at >= start)
    if end is not None:
        query = query.where(ConditionReading.recorded_at < end)
    if after is not None:
        query = query.where(
            or_(
                ConditionReading.recorded_at > after[0],
                and_(ConditionReading.recorded_at == after[0], ConditionReading.id > after[1]),
            )
        )
    return query.order_by(ConditionReading.recorded_at, ConditionReading.id)


def reading_item(row) -> dict[str, Any]:
    """One reading as the API shows it."""
    return {
        "id": row.id,
        "recorded_at": _iso(row.recorded_at),
        "temperature_c": row.temperature_c,
        "sensor_id": row.sensor_id,
        "shipment_id": row.shipment_id,
        "excursion": bool(row.excursion),
        "activity_id": row.activity_id,
    }


def downsample(therapy_id: str, start: datetime | None, end: datetime | None, points: int) -> list[dict]:
    """At most ``points`` time buckets over the window, each with count, min, max, mean and excursions."""
    rows = db.session.execute(
        series_query(therapy_id, start, end).with_only_columns(
            ConditionReading.recorded_at, ConditionReading.temperature_c, ConditionReading.excursion
        )
    ).all()
    if not rows:
        return []
    first, last = start or rows[0][0], end or rows[-1][0] + timedelta(microseconds=1)
    width = max((last - first) / points, timedelta(microseconds=1))
    buckets: dict[int, list] = {}
    for recorded_at, temperature, excursion in rows:
        index = min(int((recorded_at - first) / width), points - 1)
        bucket = buckets.setdefault(index, [0, temperature, temperature, 0.0, 0])
        bucket[0] += 1
        bucket[1], bucket[2] = min(bucket[1], temperature), max(bucket[2], temperature)
        bucket[3] += temperature
        bucket[4] += 1 if excursion else 0
    return [
        {
            "from": _iso(first + width * index),
            "to": _iso(first + width * (index + 1)),
            "count": count,
            "min_c": low,
            "max_c": high,
            "mean_c": round(total / count, 3),
            "excursions": excursions,
        }
        for index, (count, low, high, total, excursions) in sorted(buckets.items())
    ]


def summary(therapy_id: str) -> dict[str, Any]:
    """Count, extent, extremes and excursions of all readings, overall and per activity."""
    excursion_count = func.sum(case((ConditionReading.excursion.is_(True), 1), else_=0))
    columns = (
        func.count(ConditionReading.id),
        func.min(ConditionReading.recorded_at),
        func.max(ConditionReading.recorded_at),
        func.min(ConditionReading.temperature_c),
        func.max(ConditionReading.temperature_c),
        excursion_count,
    )
    where = ConditionReading.therapy_id == therapy_id
    total = db.session.execute(select(*columns).where(where)).one()
    per_activity = db.session.execute(
        select(ConditionReading.activity_id, *columns).where(where).group_by(ConditionReading.activity_id)
    ).all()

    def shape(row) -> dict[str, Any]:
        count, first, last, low, high, excursions = row
        return {
            "count": count,
            "first_at": _iso(first) if first else None,
            "last_at": _iso(last) if last else None,
            "min_c": low,
            "max_c": high,
            "excursions": int(excursions or 0),
        }

    return {**shape(total), "by_activity": [{"activity_id": row[0], **shape(row[1:])} for row in per_activity]}


def excursion_readings(therapy_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The readings outside their range, oldest first."""
    rows = db.session.execute(series_query(therapy_id).where(ConditionReading.excursion.is_(True)).limit(limit)).all()
    return [reading_item(row) for row in rows]
