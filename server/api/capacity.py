"""Capacity and bookings: slots of apheresis, manufacturing and infusion capacity, blackout days, and the
places therapies book in them."""

from __future__ import annotations

from datetime import UTC

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import require, visible_site_ids
from server.api.idempotency import idempotent
from server.api.schemas import in_utc_years, load_json
from server.store.extensions import db
from server.store.models import SLOT_KINDS, Blackout, Site
from server.usecases.checks import visible_therapy
from server.workflow import bookings, capacity

from ..errors import BadRequest
from . import bp
from .filters import moment_arg
from .paging import page


class CapacitySchema(Schema):
    """POST /capacity."""

    class Meta:
        unknown = RAISE

    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    kind = fields.String(required=True, validate=validate.OneOf(SLOT_KINDS))
    start = fields.AwareDateTime(required=True, default_timezone=UTC, validate=in_utc_years)
    end = fields.AwareDateTime(required=True, default_timezone=UTC, validate=in_utc_years)
    capacity = fields.Integer(load_default=1, strict=True)
    recurrence = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=500))


class SlotChangeSchema(Schema):
    """PATCH /slots/{id}."""

    class Meta:
        unknown = RAISE

    capacity = fields.Integer(required=True, strict=True)


class BlackoutSchema(Schema):
    """POST /capacity/blackouts."""

    class Meta:
        unknown = RAISE

    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    day = fields.Date(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class BookingRequestSchema(Schema):
    """POST /therapies/{id}/bookings."""

    class Meta:
        unknown = RAISE

    slot_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    reason_code = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class BookingCancelSchema(Schema):
    """POST /therapies/{id}/bookings/{booking_id}/cancel."""

    class Meta:
        unknown = RAISE

    reason_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


@bp.post("/capacity")
@require(*usecases.OpenCapacity.ROLES)
@idempotent
def open_capacity():
    """Open slots at a site: one, or one per occurrence of an RFC 5545 recurrence."""
    body = load_json(CapacitySchema())
    slots, skipped = usecases.open_capacity(usecases.OpenCapacity(by=g.user, **body))
    return {
        "slots": [capacity.slot_item(s) for s in slots],
        "skipped_blackout_days": [d.isoformat() for d in skipped],
    }, 201


@bp.get("/slots")
@require()
def list_slots():
    """Open slots in time order, by site, kind, window (``from``, ``to``) and ``available=true``. Every user
    sees every site's slots (a treatment centre books the manufacturing site's); a slot never names who
    booked it."""
    available = request.args.get("available", "").lower()
    if available not in ("", "true", "false"):
        raise BadRequest("available must be true or false.", code="invalid_filter", details={"field": "available"})
    start, end = moment_arg("from"), moment_arg("to")
    if start and end and start >= end:
        raise BadRequest("'from' must be before 'to'.", code="invalid_filter", details={"field": "from"})
    query = capacity.slots_query(
        request.args.get("site") or None,
        request.args.get("kind") or None,
        start,
        end,
        available == "true",
    )
    return page(query, capacity.slot_item)


@bp.patch("/slots/<slot_id>")
@require(*usecases.ChangeSlotCapacity.ROLES)
@idempotent
def change_slot(slot_id: str):
    """Change a slot's places (409 ``below_booked`` under the places booked)."""
    body = load_json(SlotChangeSchema())
    slot = usecases.change_slot_capacity(
        usecases.ChangeSlotCapacity(slot_id=slot_id, capacity=body["capacity"], by=g.user)
    )
    return capacity.slot_item(slot), 200


@bp.delete("/slots/<slot_id>")
@require(*usecases.CloseSlot.ROLES)
@idempotent
def close_slot(slot_id: str):
    """Close an unbooked slot (409 ``slot_booked`` while booked)."""
    return capacity.slot_item(usecases.close_slot(usecases.CloseSlot(slot_id=slot_id, by=g.user))), 200


@bp.post("/capacity/blackouts")
@require(*usecases.AddBlackout.ROLES)
@idempotent
def add_blackout():
    """Black out a day at a site: its open, unbooked slots close and no slot opens on it."""
    body = load_json(BlackoutSchema())
    blackout, closed = usecases.add_blackout(usecases.AddBlackout(by=g.user, **body))
    return {**capacity.blackout_item(blackout), "slots_closed": closed}, 201


@bp.get("/capacity/blackouts")
@require()
def list_blackouts():
    """Blackout days, by site, in date order."""
    query = db.select(Blackout).order_by(Blackout.day, Blackout.site_id)
    sites = visible_site_ids(g.user)
    if sites is not None:
        query = query.where(Blackout.site_id.in_(sites))
    if request.args.get("site"):
        query = query.join(Site, Site.id == Blackout.site_id).where(Site.code == request.args["site"])
    return page(query, capacity.blackout_item)


@bp.post("/therapies/<therapy_id>/bookings")
@require(*usecases.BookSlot.ROLES)
@idempotent
def book_slot(therapy_id: str):
    """Book a place in a slot for the therapy, or move its booking of that kind (a reschedule reason code)."""
    visible_therapy(g.user, therapy_id)  # an unknown or unseen therapy is 404 before the body is read
    body = load_json(BookingRequestSchema())
    booking = usecases.book_slot(usecases.BookSlot(therapy_id=therapy_id, by=g.user, **body))
    return bookings.booking_item(booking), 201


@bp.get("/therapies/<therapy_id>/bookings")
@require()
def list_bookings(therapy_id: str):
    """The therapy's bookings: booked, moved and cancelled, oldest first."""
    therapy = visible_therapy(g.user, therapy_id)
    return {"items": [bookings.booking_item(b) for b in bookings.history(therapy.id)], "next_cursor": None}


@bp.post("/therapies/<therapy_id>/bookings/<booking_id>/cancel")
@require(*usecases.CancelBooking.ROLES)
@idempotent
def cancel_booking(therapy_id: str, booking_id: str):
    """Cancel a booking (a cancel reason code), freeing its place."""
    visible_therapy(g.user, therapy_id)
    body = load_json(BookingCancelSchema())
    booking = usecases.cancel_booking(
        usecases.CancelBooking(therapy_id=therapy_id, booking_id=booking_id, by=g.user, **body)
    )
    return bookings.booking_item(booking), 200
