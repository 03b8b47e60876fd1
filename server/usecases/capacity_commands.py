"""Capacity and bookings: planners open, change and close slots and black out days at their sites; the
treatment centre (or a planner of the slot's site) books a therapy's places, moves and cancels them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar

from sqlalchemy import select

from server.access.auth import can_see_site, check_roles
from server.errors import Forbidden, Invalid
from server.store.extensions import db
from server.store.models import Blackout, Booking, Site, Slot, User
from server.store.uow import unit_of_work
from server.workflow import bookings, capacity, therapies

from .checks import audits_refusals, check_treatment_site, required_text, visible_therapy

PLANNERS = ("planner", "admin")
BOOKERS = ("coordinator", "planner", "admin")


@dataclass(frozen=True)
class OpenCapacity:
    """``by`` opens ``kind`` capacity at ``site``: one slot from ``start`` to ``end`` with ``capacity`` places,
    or one per occurrence of ``recurrence`` (an RFC 5545 RRULE)."""

    ROLES: ClassVar[tuple[str, ...]] = PLANNERS

    site: str
    kind: str
    start: datetime
    end: datetime
    by: User
    capacity: int = 1
    recurrence: str | None = None


@dataclass(frozen=True)
class ChangeSlotCapacity:
    """``by`` sets the places of slot ``slot_id`` to ``capacity``."""

    ROLES: ClassVar[tuple[str, ...]] = PLANNERS

    slot_id: str
    capacity: int
    by: User


@dataclass(frozen=True)
class CloseSlot:
    """``by`` closes the unbooked slot ``slot_id``."""

    ROLES: ClassVar[tuple[str, ...]] = PLANNERS

    slot_id: str
    by: User


@dataclass(frozen=True)
class AddBlackout:
    """``by`` blacks out ``day`` at ``site`` for ``reason``: no slot that day."""

    ROLES: ClassVar[tuple[str, ...]] = PLANNERS

    site: str
    day: date
    reason: str
    by: User


@dataclass(frozen=True)
class BookSlot:
    """``by`` books a place in slot ``slot_id`` for a therapy, or moves its booking of that kind there (then
    with ``reason_code`` of kind reschedule)."""

    ROLES: ClassVar[tuple[str, ...]] = BOOKERS

    therapy_id: str
    slot_id: str
    by: User
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CancelBooking:
    """``by`` cancels the therapy's booking ``booking_id`` for ``reason_code`` (kind cancel)."""

    ROLES: ClassVar[tuple[str, ...]] = BOOKERS

    therapy_id: str
    booking_id: str
    reason_code: str
    by: User
    reason: str | None = None


def _site(code: str) -> Site:
    site = db.session.execute(select(Site).where(Site.code == code)).scalar_one_or_none()
    if site is None:
        raise Invalid(f"No registered site '{code}'.", code="unknown_site", details={"field": "site"})
    return site


def _plans(user: User, site_id: int, code: str) -> None:
    """403 unless ``user`` plans ``site_id``'s capacity (a planner of that site, or an admin)."""
    if not can_see_site(user, site_id):
        raise Forbidden(f"You plan the capacity of your own sites, not {code}.", details={"site": code})


@audits_refusals
def open_capacity(command: OpenCapacity) -> tuple[list[Slot], list[date]]:
    """Open the slots; returns them and the blackout days the recurrence skipped."""
    check_roles(command.by, command.ROLES)
    site = _site(command.site)
    _plans(command.by, site.id, site.code)
    return capacity.open_slots(
        site, command.kind, command.start, command.end, command.capacity, command.recurrence, command.by.username
    )


@audits_refusals
def change_slot_capacity(command: ChangeSlotCapacity) -> Slot:
    """Change the places; 409 ``below_booked`` under the places booked."""
    check_roles(command.by, command.ROLES)
    slot = bookings.get_slot(command.slot_id)
    _plans(command.by, slot.site_id, slot.site.code)
    return capacity.change_capacity(slot, command.capacity, command.by.username)


@audits_refusals
def close_slot(command: CloseSlot) -> Slot:
    """Close the slot; 409 ``slot_booked`` while a place is booked."""
    check_roles(command.by, command.ROLES)
    slot = bookings.get_slot(command.slot_id)
    _plans(command.by, slot.site_id, slot.site.code)
    return capacity.close_slot(slot, command.by.username)


@audits_refusals
def add_blackout(command: AddBlackout) -> tuple[Blackout, int]:
    """Black out the day; returns it and how many open slots closed."""
    check_roles(command.by, command.ROLES)
    site = _site(command.site)
    _plans(command.by, site.id, site.code)
    return capacity.add_blackout(site, command.day, required_text(command.reason, "reason", 200), command.by.username)


def _may_book(user: User, therapy, slot: Slot) -> None:
    """A coordinator books for its treatment centre's therapies, a planner at its sites' slots."""
    if "admin" in user.roles:
        return
    if "planner" in user.roles and can_see_site(user, slot.site_id):
        return
    if "coordinator" in user.roles:
        check_treatment_site(user, therapy, "books its therapies' places")
        return
    raise Forbidden(
        f"A planner books places in the slots of its own sites, not {slot.site.code}.", details={"site": slot.site.code}
    )


@audits_refusals
def book_slot(command: BookSlot) -> Booking:
    """Book (or move) the place; see ``workflow.bookings.book`` for the refusals."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    slot = bookings.get_slot(command.slot_id)
    _may_book(command.by, therapy, slot)
    with unit_of_work():  # the place and the process data's bookings, together
        booking = bookings.book(therapy, slot, command.by.username, command.reason_code, command.reason)
        therapies.put_process_value(therapy, "bookings", bookings.process_value(therapy.id), command.by.username)
    return booking


@audits_refusals
def cancel_booking(command: CancelBooking) -> Booking:
    """Cancel the booking, freeing its place."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    booking = db.session.get(Booking, command.booking_id)
    if booking is not None and booking.therapy_id == therapy.id:
        _may_book(command.by, therapy, booking.slot)
    with unit_of_work():
        booking = bookings.cancel(therapy, command.booking_id, command.by.username, command.reason_code, command.reason)
        therapies.put_process_value(therapy, "bookings", bookings.process_value(therapy.id), command.by.username)
    return booking
