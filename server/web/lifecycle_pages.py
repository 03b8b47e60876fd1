"""Holding a therapy, resuming it and sending it back to scheduling from its page: the ``HoldTherapy``,
``ResumeTherapy`` and ``RescheduleTherapy`` commands."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from server import usecases

from . import bp
from .session import login_required, page_user
from .therapy_pages import attempt, reason_fields, visible_therapy


@bp.post("/therapies/<therapy_id>/hold")
@login_required(*usecases.HoldTherapy.ROLES)
def hold_therapy(therapy_id: str):
    """Hold an active therapy with a hold reason code and a reason (needed with OTHER)."""
    therapy = visible_therapy(therapy_id)
    code, reason = reason_fields()
    command = usecases.HoldTherapy(therapy_id=therapy.id, reason_code=code or "", reason=reason, by=page_user())
    if attempt(lambda: usecases.hold_therapy(command), "Not held") is not None:
        flash("The therapy is on hold: no task can be completed and no clock runs until it is resumed.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))


@bp.post("/therapies/<therapy_id>/resume")
@login_required(*usecases.ResumeTherapy.ROLES)
def resume_therapy(therapy_id: str):
    """Resume a held therapy, with an optional reason; its clocks go on with the time they had left."""
    therapy = visible_therapy(therapy_id)
    reason = request.form.get("reason", "").strip() or None
    command = usecases.ResumeTherapy(therapy_id=therapy.id, reason=reason, by=page_user())
    if attempt(lambda: usecases.resume_therapy(command), "Not resumed") is not None:
        flash("The therapy is active again; its clocks go on with the time they had left.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))


@bp.post("/therapies/<therapy_id>/reschedule")
@login_required(*usecases.RescheduleTherapy.ROLES)
def reschedule_therapy(therapy_id: str):
    """Send the therapy back to scheduling with a reschedule reason code (and a reason, needed with OTHER)."""
    therapy = visible_therapy(therapy_id)
    code, reason = reason_fields()
    command = usecases.RescheduleTherapy(therapy_id=therapy.id, reason_code=code or "", reason=reason, by=page_user())
    if attempt(lambda: usecases.reschedule_therapy(command), "Not sent back to scheduling") is not None:
        flash(
            "The therapy is back at scheduling: choose the new slots there; its bookings move with this reason.",
            "success",
        )
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))
