"""Capacity: the slots of apheresis, manufacturing and infusion capacity each site opens, and its blackout days.

A planner opens slots one at a time or by an RFC 5545 recurrence (``FREQ=WEEKLY;BYDAY=MO,TH;COUNT=10``,
expanded with python-dateutil), changes a slot's places, closes an unbooked one, and blacks out days. Slots
of one site and kind never overlap; none is opened in the past or on a blackout day.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from dateutil.rrule import rrulestr
from flask import current_app
from sqlalchemy import Select, select, update

from server.clock import clock, iso
from server.errors import Conflict, Invalid
from server.store import audit
from server.store.extensions import db
from server.store.models import SLOT_KINDS, Blackout, Site, Slot
from server.store.uow import rows_changed, unit_of_work

# The kinds of site that hold each kind of capacity.
SITE_KINDS_FOR = {
    "apheresis": ("apheresis-centre", "treatment-centre"),
    "manufacturing": ("manufacturing",),
    "infusion": ("treatment-centre",),
}
MAX_CAPACITY = 1000


def check_kind(kind: object) -> str:
    """``kind`` when it is a kind of capacity; 422 otherwise."""
    if kind not in SLOT_KINDS:
        raise Invalid(
            f"kind must be one of {', '.join(SLOT_KINDS)}.", code="invalid_request", details={"field": "kind"}
        )
    return str(kind)


def check_capacity(capacity: object) -> int:
    """A number of places from 1 to ``MAX_CAPACITY``; 422 otherwise."""
    if type(capacity) is not int or not 1 <= capacity <= MAX_CAPACITY:
        raise Invalid(
            f"capacity must be a whole number of places from 1 to {MAX_CAPACITY}.",
            code="invalid_request",
            details={"field": "capacity"},
        )
    return capacity


def windows(start: datetime, end: datetime, recurrence: str | None) -> list[tuple[datetime, datetime]]:
    """The (start, end) of each occurrence: one, or one per date of the recurrence rule (bounded by COUNT or
    UNTIL, and by ``TETHER_CAPACITY_MAX_OCCURRENCES``)."""
    if end <= start:
        raise Invalid("end must be after start.", code="invalid_request", details={"field": "end"})
    if not recurrence:
        return [(start, end)]
    rule_text = recurrence.strip().removeprefix("RRULE:")
    if "COUNT=" not in rule_text.upper() and "UNTIL=" not in rule_text.upper():
        raise Invalid(
            "A recurrence needs COUNT or UNTIL (it must end).",
            code="invalid_recurrence",
            details={"field": "recurrence"},
        )
    try:
        rule = rrulestr(rule_text, dtstart=start)
    except (ValueError, TypeError) as exc:
        raise Invalid(
            f"The recurrence is not an RFC 5545 rule: {exc}.",
            code="invalid_recurrence",
            details={"field": "recurrence"},
        ) from None
    most = int(current_app.config["CAPACITY_MAX_OCCURRENCES"])
    try:
        starts = list(itertools.islice(iter(rule), most + 1))  # type: ignore[call-overload]
    except (ValueError, TypeError, OverflowError) as exc:
        raise Invalid(
            f"The recurrence cannot be expanded: {exc}.", code="invalid_recurrence", details={"field": "recurrence"}
        ) from None
    if not starts:
        raise Invalid(
            "The recurrence makes no slot (its COUNT is 0, or its UNTIL lies before the start).",
            code="invalid_recurrence",
            details={"field": "recurrence"},
        )
    if len(starts) > most:
        raise Invalid(
            f"The recurrence makes more than {most} slots; open them in several requests.",
            code="too_many_occurrences",
            details={"field": "recurrence", "max": most},
        )
    length = end - start
    return [(moment, moment + length) for moment in starts]


def open_slots(
    site: Site, kind: str, start: datetime, end: datetime, capacity: int, recurrence: str | None, actor: str
) -> tuple[list[Slot], list[date]]:
    """Open the slots (one transaction, audited); returns them and the blackout days skipped.

    422 for a kind the site does not hold, a window in the past or ending before it starts, a recurrence that
    does not end or makes too many slots, a single slot on a blackout day; 409 ``overlapping_slot`` when a
    window overlaps an open slot of the site and kind.
    """
    kind, capacity = check_kind(kind), check_capacity(capacity)
    if site.kind not in SITE_KINDS_FOR[kind]:
        raise Invalid(
            f"Site {site.code} is a {site.kind}; {kind} capacity is at a {' or '.join(SITE_KINDS_FOR[kind])}.",
            code="wrong_site_kind",
            details={"field": "site"},
        )
    wanted = windows(start, end, recurrence)
    if wanted[0][0] <= clock()():
        raise Invalid("A slot cannot start in the past.", code="slot_in_past", details={"field": "start"})
    dark = blackout_days(site.id, wanted[0][0].date(), wanted[-1][1].date())
    kept = [w for w in wanted if w[0].date() not in dark]
    skipped = sorted({w[0].date() for w in wanted if w[0].date() in dark})
    if not kept:
        raise Invalid(
            f"{site.code} is blacked out on {', '.join(d.isoformat() for d in skipped)}.",
            code="blackout",
            details={"field": "start"},
        )
    existing = db.session.execute(
        select(Slot).where(
            Slot.site_id == site.id,
            Slot.kind == kind,
            Slot.status == "open",
            Slot.start_at < kept[-1][1],
            Slot.end_at > kept[0][0],
        )
    ).scalars()
    for slot in existing:
        for begin, finish in kept:
            if slot.start_at < finish and slot.end_at > begin:
                raise Conflict(
                    f"The {kind} slot from {iso(begin)} overlaps the open slot {slot.id} ({iso(slot.start_at)} to "
                    f"{iso(slot.end_at)}); change that one's capacity instead.",
                    code="overlapping_slot",
                    details={"slot_id": slot.id, "start": iso(begin)},
                )
    with unit_of_work():
        slots = [
            Slot(site_id=site.id, site=site, kind=kind, start_at=b, end_at=f, capacity=capacity, booked=0,
                 status="open", created_by=actor)
            for b, f in kept
        ]  # fmt: skip
        db.session.add_all(slots)
        db.session.flush()
        audit.append(
            actor,
            "capacity.opened",
            "site",
            site.code,
            site_id=site.id,
            data={
                "kind": kind,
                "slots": len(slots),
                "capacity": capacity,
                "first": iso(kept[0][0]),
                "last": iso(kept[-1][0]),
                "recurrence": recurrence,
                "skipped_blackout_days": [d.isoformat() for d in skipped],
            },
        )
    return slots, skipped


def blackout_days(site_id: int, first: date, last: date) -> set[date]:
    """The site's blackout days from ``first`` to ``last``."""
    rows = db.session.execute(
        select(Blackout.day).where(Blackout.site_id == site_id, Blackout.day >= first, Blackout.day <= last)
    ).scalars()
    return set(rows)


def change_capacity(slot: Slot, capacity: int, actor: str) -> Slot:
    """Set the slot's places; 409 ``below_booked`` under the places booked (checked in the UPDATE itself)."""
    capacity = check_capacity(capacity)
    before = slot.capacity
    with unit_of_work():
        changed = rows_changed(
            update(Slot)
            .where(Slot.id == slot.id, Slot.status == "open", Slot.booked <= capacity)
            .values(capacity=capacity)
        )
        if not changed:
            db.session.refresh(slot)
            if slot.status != "open":
                raise Conflict("The slot is closed.", code="slot_closed", details={"slot_id": slot.id})
            raise Conflict(
                f"{slot.booked} places are booked; the capacity cannot go below that.",
                code="below_booked",
                details={"slot_id": slot.id, "booked": slot.booked},
            )
        audit.append(
            actor,
            "slot.changed",
            "slot",
            slot.id,
            site_id=slot.site_id,
            data={"capacity": {"from": before, "to": capacity}},
        )
    db.session.refresh(slot)
    return slot


def close_slot(slot: Slot, actor: str) -> Slot:
    """Close an unbooked slot (it is no longer listed); 409 ``slot_booked`` while a place is booked."""
    with unit_of_work():
        closed = rows_changed(
            update(Slot).where(Slot.id == slot.id, Slot.status == "open", Slot.booked == 0).values(status="closed")
        )
        if not closed:
            db.session.refresh(slot)
            if slot.status == "open":
                raise Conflict(
                    f"{slot.booked} places of the slot are booked; move or cancel those bookings first.",
                    code="slot_booked",
                    details={"slot_id": slot.id, "booked": slot.booked},
                )
            raise Conflict("The slot is closed already.", code="slot_closed", details={"slot_id": slot.id})
        audit.append(actor, "slot.closed", "slot", slot.id, site_id=slot.site_id, data={"kind": slot.kind})
    db.session.refresh(slot)
    return slot


def add_blackout(site: Site, day: date, reason: str, actor: str) -> tuple[Blackout, int]:
    """Black out ``day`` at ``site``: its open, unbooked slots close; returns the blackout and how many closed.
    409 ``slot_booked`` when a slot that day has bookings, ``blackout_exists`` when the day is dark already."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)  # days are UTC days
    that_day = (
        Slot.site_id == site.id,
        Slot.status == "open",
        Slot.start_at >= start,
        Slot.start_at < start + timedelta(days=1),
    )
    with unit_of_work():
        if db.session.get(Blackout, (site.id, day)) is not None:
            raise Conflict(f"{site.code} is blacked out on {day} already.", code="blackout_exists")
        booked = db.session.execute(select(Slot.id).where(*that_day, Slot.booked > 0)).scalars().all()
        if booked:
            raise Conflict(
                f"{len(booked)} slot(s) of {site.code} on {day} have bookings; move them first.",
                code="slot_booked",
                details={"slot_ids": list(booked)},
            )
        closed = rows_changed(update(Slot).where(*that_day, Slot.booked == 0).values(status="closed"))
        blackout = Blackout(site_id=site.id, site=site, day=day, reason=reason, created_by=actor)
        db.session.add(blackout)
        audit.append(
            actor,
            "blackout.added",
            "site",
            site.code,
            site_id=site.id,
            reason=reason,
            data={"day": day.isoformat(), "slots_closed": closed},
        )
    return blackout, closed


def slots_query(
    site_code: str | None,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    available: bool,
) -> Select:
    """Open slots in time order, narrowed as asked."""
    query = select(Slot).where(Slot.status == "open").order_by(Slot.start_at, Slot.id)
    if site_code:
        query = query.join(Site, Site.id == Slot.site_id).where(Site.code == site_code)
    if kind:
        query = query.where(Slot.kind == check_kind(kind))
    if start is not None:
        query = query.where(Slot.end_at > start)
    if end is not None:
        query = query.where(Slot.start_at < end)
    if available:
        query = query.where(Slot.booked < Slot.capacity)
    return query


def slot_item(slot: Slot) -> dict:
    """A slot as the API shows it."""
    return {
        "id": slot.id,
        "site": slot.site.code,
        "kind": slot.kind,
        "start": iso(slot.start_at),
        "end": iso(slot.end_at),
        "capacity": slot.capacity,
        "booked": slot.booked,
        "available": max(0, slot.capacity - slot.booked),
        "status": slot.status,
    }


def blackout_item(blackout: Blackout) -> dict:
    """A blackout day as the API shows it."""
    return {"site": blackout.site.code, "day": blackout.day.isoformat(), "reason": blackout.reason}
