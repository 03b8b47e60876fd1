"""Bookings: a therapy's place in a slot of apheresis, manufacturing or infusion capacity.

A booking takes its place with one guarded UPDATE (``booked = booked + 1 WHERE booked < capacity``), so that of
concurrent requests for a slot's last places exactly as many succeed as there are places, on SQLite and
PostgreSQL alike; a unique index keeps one booked place per kind per therapy. Moving a booking frees the old
place in the same transaction. Every change is audited and published (``booking.created``, ``booking.moved``,
``booking.cancelled``), and the therapy's process data carries its bookings under ``bookings`` (kind to slot
id, site, start and end), so gateways and timers can use the booked dates.
"""

from __future__ import annotations

from sqlalchemy import select, update

from server.clock import clock, iso
from server.errors import Conflict, Invalid, NotFound
from server.integration import outbox
from server.store.extensions import db
from server.store.models import Booking, Slot, Therapy
from server.store.uow import rows_changed, unit_of_work
from server.workflow import reason_codes

# Which party's site holds each kind of capacity a therapy books.
PARTIES_FOR = {
    "apheresis": ("apheresis", "treatment"),
    "manufacturing": ("manufacturing",),
    "infusion": ("apheresis", "treatment"),
}
BOOKABLE = ("active", "on_hold")


def booked(therapy_id: str) -> list[Booking]:
    """The therapy's booked places, by kind."""
    rows = db.session.execute(
        select(Booking).where(Booking.therapy_id == therapy_id, Booking.status == "booked").order_by(Booking.kind)
    ).scalars()
    return list(rows)


def history(therapy_id: str) -> list[Booking]:
    """Every booking the therapy had (booked, moved, cancelled), oldest first."""
    rows = db.session.execute(
        select(Booking)
        .where(Booking.therapy_id == therapy_id)
        .order_by(Booking.created_at, Booking.ended_at.is_(None), Booking.id)  # at one moment: the ended first
    ).scalars()
    return list(rows)


def get_slot(slot_id: str) -> Slot:
    """An open or closed slot, or 404."""
    slot = db.session.get(Slot, slot_id)
    if slot is None:
        raise NotFound("No such slot.", details={"slot_id": slot_id})
    return slot


def check_site(therapy: Therapy, slot: Slot) -> None:
    """422 ``wrong_site`` unless the slot is at the therapy's site for its kind."""
    parties = therapy.parties
    allowed = {parties[p] for p in PARTIES_FOR[slot.kind] if parties.get(p)}
    if slot.site.code not in allowed:
        where = " or ".join(f"its {p} site ({parties.get(p) or 'none yet'})" for p in PARTIES_FOR[slot.kind])
        raise Invalid(
            f"The slot is at {slot.site.code}; this therapy's {slot.kind} is at {where}.",
            code="wrong_site",
            details={"field": "slot_id", "site": slot.site.code},
        )


def book(therapy: Therapy, slot: Slot, actor: str, reason_code: str | None, reason: str | None) -> Booking:
    """Book a place in ``slot`` for ``therapy``, or move its booking of that kind there (a reschedule reason
    code required); one transaction.

    409 ``not_active`` (therapy ended), ``slot_closed``, ``slot_full`` (no place left, also when another request
    took the last one first), ``already_booked`` (this very slot); 422 ``slot_in_past``, ``wrong_site``,
    ``reason_code_required`` or an unknown reason code.
    """
    if therapy.status not in BOOKABLE:
        raise Conflict(f"The therapy is {therapy.status}; it books nothing more.", code="not_active")
    if slot.status != "open":
        raise Conflict("The slot is closed.", code="slot_closed", details={"slot_id": slot.id})
    if slot.start_at <= clock()():
        raise Invalid(
            "The slot has begun or is over; book a later one.", code="slot_in_past", details={"field": "slot_id"}
        )
    check_site(therapy, slot)
    current = next((b for b in booked(therapy.id) if b.kind == slot.kind), None)
    if current is not None and current.slot_id == slot.id:
        raise Conflict("The therapy holds a place in this slot already.", code="already_booked")
    if current is not None:
        if not reason_code:
            raise Invalid(
                f"The therapy holds a {slot.kind} booking; moving it needs a reason code of kind reschedule.",
                code="reason_code_required",
                details={"field": "reason_code", "booking_id": current.id},
            )
        reason_code, reason = reason_codes.checked("reschedule", reason_code, reason)
    now = clock()()
    with unit_of_work():
        taken = rows_changed(
            update(Slot)
            .where(Slot.id == slot.id, Slot.status == "open", Slot.booked < Slot.capacity)
            .values(booked=Slot.booked + 1)
        )
        if not taken:
            raise Conflict(
                "The slot has no place left; choose another.", code="slot_full", details={"slot_id": slot.id}
            )
        if current is not None:
            _release(current, "moved", actor, now)
        booking = Booking(
            therapy_id=therapy.id,
            slot_id=slot.id,
            kind=slot.kind,
            status="booked",
            reason_code=reason_code if current is not None else None,
            reason=reason if current is not None else None,
            created_at=now,
            created_by=actor,
        )
        db.session.add(booking)
        db.session.flush()
        db.session.refresh(slot)
        data = booking_item(booking)
        if current is not None:
            data = {**data, "from": booking_item(current), "reason_code": reason_code}
        outbox.record_event(
            "booking.moved" if current is not None else "booking.created", therapy, data, actor, reason=reason
        )
    return booking


def cancel(therapy: Therapy, booking_id: str, actor: str, reason_code: str, reason: str | None) -> Booking:
    """Cancel one of the therapy's bookings (a cancel reason code), freeing its place; 404 for another
    therapy's booking, 409 ``not_booked`` for one moved or cancelled already."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.therapy_id != therapy.id:
        raise NotFound("No such booking of this therapy.", details={"booking_id": booking_id})
    if booking.status != "booked":
        raise Conflict(f"The booking is {booking.status} already.", code="not_booked")
    code, text = reason_codes.checked("cancel", reason_code, reason)
    with unit_of_work():
        _release(booking, "cancelled", actor, clock()(), code, text)
        outbox.record_event(
            "booking.cancelled", therapy, {**booking_item(booking), "reason_code": code}, actor, reason=text
        )
    return booking


def free_all(therapy: Therapy, actor: str, reason: str) -> None:
    """Cancel every booked place of a therapy that ends (inside the caller's transaction)."""
    for booking in booked(therapy.id):
        _release(booking, "cancelled", actor, clock()(), reason_codes.OTHER, reason)
        outbox.record_event("booking.cancelled", therapy, booking_item(booking), actor, reason=reason)


def _release(
    booking: Booking, status: str, actor: str, now, reason_code: str | None = None, reason: str | None = None
) -> None:
    """End a booking and give its place back to the slot."""
    rows_changed(update(Slot).where(Slot.id == booking.slot_id, Slot.booked > 0).values(booked=Slot.booked - 1))
    booking.status, booking.ended_at, booking.ended_by = status, now, actor
    if reason_code is not None:
        booking.reason_code, booking.reason = reason_code, reason
    db.session.flush()
    db.session.expire(booking.slot)


def process_value(therapy_id: str) -> dict:
    """The therapy's booked places as its process data carries them (``bookings``): kind to slot id, site,
    start and end."""
    return {
        b.kind: {
            "slot_id": b.slot_id,
            "site": b.slot.site.code,
            "start": iso(b.slot.start_at),
            "end": iso(b.slot.end_at),
        }
        for b in booked(therapy_id)
    }


def booking_item(booking: Booking) -> dict:
    """A booking as the API shows it."""
    slot = booking.slot
    return {
        "id": booking.id,
        "therapy_id": booking.therapy_id,
        "slot_id": booking.slot_id,
        "kind": booking.kind,
        "site": slot.site.code,
        "start": iso(slot.start_at),
        "end": iso(slot.end_at),
        "status": booking.status,
        "reason_code": booking.reason_code,
        "created_at": iso(booking.created_at),
        "created_by": booking.created_by,
    }
