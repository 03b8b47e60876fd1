"""The planner's capacity calendar: a site's week of slots (kind, time, places left of the capacity, the COIs
booked, never a patient), and the forms that open capacity (one slot or a weekly recurrence), change a slot's
places, close a slot and black out a day: the ``OpenCapacity``, ``ChangeSlotCapacity``, ``CloseSlot`` and
``AddBlackout`` commands. Times are UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import abort, flash, redirect, render_template, request, url_for

from server import usecases
from server.errors import ApiError
from server.store.extensions import db
from server.store.models import SLOT_KINDS, Slot
from server.workflow.capacity import SITE_KINDS_FOR

from . import bp
from .session import PLANNERS, login_required, page_user
from .slots import capacity_sites, slot_label, week, week_start
from .therapy_pages import attempt, refusal

WEEKDAYS = (("MO", "Mon"), ("TU", "Tue"), ("WE", "Wed"), ("TH", "Thu"), ("FR", "Fri"), ("SA", "Sat"), ("SU", "Sun"))


@bp.get("/capacity")
@login_required(*PLANNERS)
def capacity():
    """A site's week: its slots day by day, the places booked and left, its blackout days, and the forms."""
    user = page_user()
    sites = capacity_sites(user)
    if not sites:
        abort(404)
    wanted = request.args.get("site", "")
    site = next((s for s in sites if s.code == wanted), sites[0])
    monday = week_start(request.args.get("week"))
    return render_template(
        "web/capacity.html",
        sites=sites,
        site=site,
        monday=monday,
        days=week(user, site, monday),
        previous=monday - timedelta(days=7),
        following=monday + timedelta(days=7),
        kinds=[k for k in SLOT_KINDS if site.kind in SITE_KINDS_FOR[k]],
        weekdays=WEEKDAYS,
        slot_label=slot_label,
    )


def _back(site: str, day: date | None = None):
    """To the calendar of ``site``, at the week of ``day`` (or the week the form was sent from)."""
    week = day.isoformat() if day else request.form.get("week") or None
    return redirect(url_for("web.capacity", site=site, week=week))


def _moment(name: str) -> datetime | None:
    """A form's UTC date and time (``YYYY-MM-DDTHH:MM``), or None when missing or not one."""
    try:
        return datetime.fromisoformat(request.form.get(name, "").strip()).replace(tzinfo=UTC)
    except ValueError:
        return None


def _whole(name: str, default: int = 0) -> int:
    try:
        return int(request.form.get(name, "").strip() or default)
    except ValueError:
        return 0


def _recurrence() -> str | None:
    """The weekly RRULE of the ticked days and the number of slots, or None when no day is ticked."""
    days = [code for code, _ in WEEKDAYS if code in request.form.getlist("repeat_days")]
    if not days:
        return None
    return f"FREQ=WEEKLY;BYDAY={','.join(days)};COUNT={_whole('repeat_count')}"


@bp.post("/capacity")
@login_required(*PLANNERS)
def open_capacity():
    """Open one slot, or one per ticked weekday for as many slots as asked."""
    site, kind = request.form.get("site", ""), request.form.get("kind", "")
    start, end = _moment("start"), _moment("end")
    if start is None or end is None:
        flash("Not opened: give the start and the end, each a date and a time (UTC).", "error")
        return _back(site)
    if request.form.getlist("repeat_days") and _whole("repeat_count") < 1:
        flash("Not opened: say how many slots the weekly repeat opens.", "error")
        return _back(site)
    try:
        slots, skipped = usecases.open_capacity(
            usecases.OpenCapacity(
                site=site,
                kind=kind,
                start=start,
                end=end,
                capacity=_whole("capacity", 1),
                recurrence=_recurrence(),
                by=page_user(),
            )
        )
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not opened: {refusal(exc)}", "error")
        return _back(site)
    dark = f" (blacked out, skipped: {', '.join(d.isoformat() for d in skipped)})" if skipped else ""
    many = "slot" if len(slots) == 1 else "slots"
    flash(f"Opened {len(slots)} {kind} {many} at {site}, the first {slot_label(slots[0])}{dark}.", "success")
    return _back(site, slots[0].start_at.date())


def _slot(slot_id: str) -> Slot:
    slot = db.session.get(Slot, slot_id)
    if slot is None:
        abort(404)
    return slot


@bp.post("/capacity/slots/<slot_id>/capacity")
@login_required(*usecases.ChangeSlotCapacity.ROLES)
def change_slot_capacity(slot_id: str):
    """Set a slot's places (not below those booked)."""
    slot = _slot(slot_id)
    site, day = slot.site.code, slot.start_at.date()
    command = usecases.ChangeSlotCapacity(slot_id=slot_id, capacity=_whole("capacity"), by=page_user())
    changed = attempt(lambda: usecases.change_slot_capacity(command), "The capacity was not changed")
    if changed is not None:
        flash(f"Changed: {slot_label(changed)} of {changed.capacity}.", "success")
    return _back(site, day)


@bp.post("/capacity/slots/<slot_id>/close")
@login_required(*usecases.CloseSlot.ROLES)
def close_slot(slot_id: str):
    """Close a slot nobody booked."""
    slot = _slot(slot_id)
    site, day, label = slot.site.code, slot.start_at.date(), slot_label(slot)
    command = usecases.CloseSlot(slot_id=slot_id, by=page_user())
    if attempt(lambda: usecases.close_slot(command), "The slot was not closed") is not None:
        flash(f"Closed: the {slot.kind} slot {label.rsplit(', ', 1)[0]}.", "success")
    return _back(site, day)


@bp.post("/capacity/blackouts")
@login_required(*usecases.AddBlackout.ROLES)
def add_blackout():
    """Black out a day at a site: its free slots close, none opens on it."""
    site = request.form.get("site", "")
    try:
        day = date.fromisoformat(request.form.get("day", "").strip())
    except ValueError:
        flash("Not blacked out: give the day (YYYY-MM-DD).", "error")
        return _back(site)
    try:
        _, closed = usecases.add_blackout(
            usecases.AddBlackout(site=site, day=day, reason=request.form.get("reason", ""), by=page_user())
        )
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not blacked out: {refusal(exc)}", "error")
        return _back(site)
    flash(f"{site} is blacked out on {day.isoformat()}; {closed} free slot(s) closed.", "success")
    return _back(site, day)
