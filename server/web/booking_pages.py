"""A therapy's bookings on its page: the places it holds (kind, site, window, status), booking or moving a place
(a reschedule reason code to move) and cancelling one (a cancel reason code): the ``BookSlot`` and
``CancelBooking`` commands."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from server import usecases
from server.store.extensions import db
from server.store.models import Slot

from . import bp
from .session import login_required, page_user
from .slots import slot_label
from .therapy_pages import attempt, reason_fields, visible_therapy


@bp.post("/therapies/<therapy_id>/bookings")
@login_required(*usecases.BookSlot.ROLES)
def book_slot(therapy_id: str):
    """Book a place in the chosen slot, or move the therapy's booking of that kind there (with a reschedule
    reason code)."""
    therapy = visible_therapy(therapy_id)
    slot_id = request.form.get("slot_id", "").strip()
    code, reason = reason_fields()
    slot = db.session.get(Slot, slot_id) if slot_id else None
    label = slot_label(slot) if slot is not None else slot_id
    command = usecases.BookSlot(therapy_id=therapy.id, slot_id=slot_id, by=page_user(), reason_code=code, reason=reason)
    if attempt(lambda: usecases.book_slot(command), "Not booked") is not None:
        flash(f"Booked: {label.rsplit(', ', 1)[0]}.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id, _anchor="bookings-title"))


@bp.post("/therapies/<therapy_id>/bookings/<booking_id>/cancel")
@login_required(*usecases.CancelBooking.ROLES)
def cancel_booking(therapy_id: str, booking_id: str):
    """Cancel one of the therapy's bookings with a cancel reason code, freeing its place."""
    therapy = visible_therapy(therapy_id)
    code, reason = reason_fields()
    command = usecases.CancelBooking(
        therapy_id=therapy.id, booking_id=booking_id, reason_code=code or "", reason=reason, by=page_user()
    )
    cancelled = attempt(lambda: usecases.cancel_booking(command), "The booking was not cancelled")
    if cancelled is not None:
        flash(f"The {cancelled.kind} booking was cancelled; its place is free again.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id, _anchor="bookings-title"))
