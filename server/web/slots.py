"""Capacity as the pages read it: a site's week of slots with who booked them (by COI, never the patient), the free
slots a therapy may book for a kind (the booking picker), and the utilisation of the coming weeks by site and kind.

Times are UTC days and hours, as capacity is opened (``server.workflow.capacity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from server import usecases
from server.access.auth import can_see_site, can_see_therapy, visible_site_ids
from server.store.extensions import db
from server.store.models import SLOT_KINDS, Blackout, Booking, Site, Slot, Therapy, User
from server.workflow import bookings
from server.workflow.capacity import SITE_KINDS_FOR

from .form_fields import Field, walk
from .network import reasons
from .present import eye_readable, now
from .session import has_role

PICKER_LIMIT = 60  # the free slots a picker offers, soonest first
UTILISATION_DAYS = 14
CAPACITY_SITE_KINDS = {kind for kinds in SITE_KINDS_FOR.values() for kind in kinds}


def slot_label(slot: Slot) -> str:
    """'Tue 12 Jan 08:00-16:00, MFG-1, 1 place left' (UTC)."""
    left = max(0, slot.capacity - slot.booked)
    start, end = slot.start_at.astimezone(UTC), slot.end_at.astimezone(UTC)
    until = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%a %d %b %H:%M")
    places = f"{left} place{'' if left == 1 else 's'} left"
    return f"{start.strftime('%a %d %b %H:%M')}-{until}, {slot.site.code}, {places}"


def therapy_sites(therapy: Therapy, kind: str) -> list[str]:
    """The site codes where ``therapy`` books ``kind`` capacity (its parties' sites for that kind)."""
    parties = therapy.parties
    return sorted({code for p in bookings.PARTIES_FOR[kind] if (code := parties.get(p))})


def free_slots(therapy: Therapy, kind: str) -> list[Slot]:
    """The open, not yet started slots of ``kind`` with a place left at the therapy's sites for it, soonest
    first."""
    sites = therapy_sites(therapy, kind)
    if not sites:
        return []
    query = (
        select(Slot)
        .join(Site, Site.id == Slot.site_id)
        .where(
            Site.code.in_(sites),
            Slot.kind == kind,
            Slot.status == "open",
            Slot.booked < Slot.capacity,
            Slot.start_at > now(),
        )
        .order_by(Slot.start_at, Slot.id)
        .limit(PICKER_LIMIT)
    )
    return list(db.session.execute(query).scalars())


def slot_choices(therapy: Therapy, kind: str, current: str = "") -> list[tuple[str, str]]:
    """(slot id, label) of the free slots a picker offers; a chosen slot that is no longer free stays listed."""
    choices = [(s.id, slot_label(s)) for s in free_slots(therapy, kind)]
    if current and current not in {value for value, _ in choices}:
        slot = db.session.get(Slot, current)
        choices.insert(0, (current, slot_label(slot) if slot is not None else current))
    return choices


def may_book(user: User, therapy: Therapy) -> bool:
    """Whether the page offers ``user`` to book the therapy's places: a booker of its treatment centre, a planner
    or an administrator, while the therapy books (the command decides on each slot)."""
    return (
        therapy.status in bookings.BOOKABLE
        and has_role(user, *usecases.BookSlot.ROLES)
        and (has_role(user, "planner", "admin") or can_see_site(user, therapy.site_id))
    )


def booking_context(user: User, therapy: Therapy) -> dict:
    """What the therapy page shows of its bookings and, for those who book, the forms' choices."""
    history = bookings.history(therapy.id)
    booking = may_book(user, therapy)
    held = {b.kind: b for b in history if b.status == "booked"}
    # A planner of another site books only at its own sites; the treatment centre and administrators at any.
    anywhere = not user.scoped or can_see_site(user, therapy.site_id)
    pickers = [
        {"kind": kind, "sites": sites, "held": held.get(kind), "choices": slot_choices(therapy, kind)}
        for kind in SLOT_KINDS
        if booking and (sites := therapy_sites(therapy, kind)) and (anywhere or set(sites) & set(user.site_codes))
    ]
    return {
        "bookings": history,
        "can_book": booking,
        "pickers": pickers,
        "reschedule_reasons": reasons("reschedule") if booking else [],
        "booking_cancel_reasons": reasons("cancel") if booking else [],
    }


def fill_pickers(fields: list[Field], therapy: Therapy) -> None:
    """Give each slot picker of a task's form the free slots of its kind at the therapy's sites."""
    for item in walk(fields):
        if item.slot_kind:
            item.options = slot_choices(therapy, item.slot_kind, str(item.value or ""))


def capacity_sites(user: User) -> list[Site]:
    """The sites holding capacity that ``user`` plans or reads: their own, or every one when not scoped."""
    query = select(Site).where(Site.kind.in_(CAPACITY_SITE_KINDS)).order_by(Site.code)
    mine = visible_site_ids(user)
    if mine is not None:
        query = query.where(Site.id.in_(mine))
    return list(db.session.execute(query).scalars())


def week_start(value: str | None) -> date:
    """The Monday of the week of ``value`` (YYYY-MM-DD), or of this week."""
    try:
        day = date.fromisoformat(value) if value else now().date()
    except ValueError:
        day = now().date()
    return day - timedelta(days=day.weekday())


@dataclass
class Place:
    """A booked place as the calendar shows it: the therapy's COI and page, or nothing when not the reader's."""

    coi: str | None
    therapy_id: str | None


@dataclass
class Day:
    """One day of a site's week: its slots, each with its booked places, and its blackout."""

    day: date
    blackout: str | None = None
    slots: list[tuple[Slot, list[Place]]] = field(default_factory=list)


def week(user: User, site: Site, monday: date) -> list[Day]:
    """The seven days from ``monday`` at ``site``: open slots in time order with the COIs booked in them (only of
    therapies ``user`` may see; a place of another's therapy shows as booked, without a name)."""
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    end = start + timedelta(days=7)
    slots = list(
        db.session.execute(
            select(Slot)
            .where(Slot.site_id == site.id, Slot.status == "open", Slot.start_at >= start, Slot.start_at < end)
            .order_by(Slot.start_at, Slot.kind, Slot.id)
        ).scalars()
    )
    booked = db.session.execute(
        select(Booking.slot_id, Therapy)
        .join(Therapy, Therapy.id == Booking.therapy_id)
        .where(Booking.slot_id.in_([s.id for s in slots]), Booking.status == "booked")
        .order_by(Booking.created_at, Booking.id)
    ).all()
    places: dict[str, list[Place]] = {}
    for slot_id, therapy in booked:
        seen = can_see_therapy(user, therapy)
        places.setdefault(slot_id, []).append(
            Place(eye_readable(therapy.coi) if seen else None, therapy.id if seen else None)
        )
    dark = dict(
        db.session.execute(
            select(Blackout.day, Blackout.reason).where(
                Blackout.site_id == site.id, Blackout.day >= monday, Blackout.day < monday + timedelta(days=7)
            )
        ).all()
    )
    days = [Day(monday + timedelta(days=i), dark.get(monday + timedelta(days=i))) for i in range(7)]
    for slot in slots:
        days[(slot.start_at.astimezone(UTC).date() - monday).days].slots.append((slot, places.get(slot.id, [])))
    return days


@dataclass
class Utilisation:
    """The places booked of the capacity a site holds of a kind over the coming weeks."""

    site: str
    kind: str
    booked: int
    capacity: int

    @property
    def percent(self) -> int:
        """Booked places as a whole percentage of the capacity."""
        return round(100 * self.booked / self.capacity) if self.capacity else 0


def utilisation(user: User, days: int = UTILISATION_DAYS) -> list[Utilisation]:
    """Per site ``user`` sees and kind: places booked and capacity of the open slots starting in the next
    ``days`` days, by site code and kind."""
    start = now()
    query = (
        select(Site.code, Slot.kind, func.sum(Slot.booked), func.sum(Slot.capacity))
        .join(Site, Site.id == Slot.site_id)
        .where(Slot.status == "open", Slot.start_at >= start, Slot.start_at < start + timedelta(days=days))
        .group_by(Site.code, Slot.kind)
    )
    mine = visible_site_ids(user)
    if mine is not None:
        query = query.where(Slot.site_id.in_(mine))
    rows = [
        Utilisation(code, kind, int(booked or 0), int(total or 0))
        for code, kind, booked, total in db.session.execute(query)
    ]
    return sorted(rows, key=lambda row: (row.site, SLOT_KINDS.index(row.kind)))
