"""Holding a therapy and resuming it from its page: the ``HoldTherapy`` and ``ResumeTherapy`` commands."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from server import usecases
from server.errors import ApiError
from server.store.extensions import db

from . import bp
from .session import login_required, page_user
from .therapy_pages import reason_fields, refusal, visible_therapy


@bp.post("/therapies/<therapy_id>/hold")
@login_required(*usecases.HoldTherapy.ROLES)
def hold_therapy(therapy_id: str):
    """Hold an active therapy with a hold reason code and a reason (needed with OTHER)."""
    therapy = visible_therapy(therapy_id)
    code, reason = reason_fields()
    try:
        usecases.hold_therapy(
            usecases.HoldTherapy(therapy_id=therapy.id, reason_code=code or "", reason=reason, by=page_user())
        )
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not held: {refusal(exc)}", "error")
    else:
        flash("The therapy is on hold: no task can be completed and no clock runs until it is resumed.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))


@bp.post("/therapies/<therapy_id>/resume")
@login_required(*usecases.ResumeTherapy.ROLES)
def resume_therapy(therapy_id: str):
    """Resume a held therapy, with an optional reason; its clocks go on with the time they had left."""
    therapy = visible_therapy(therapy_id)
    reason = request.form.get("reason", "").strip() or None
    try:
        usecases.resume_therapy(usecases.ResumeTherapy(therapy_id=therapy.id, reason=reason, by=page_user()))
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not resumed: {refusal(exc)}", "error")
    else:
        flash("The therapy is active again; its clocks go on with the time they had left.", "success")
    return redirect(url_for("web.therapy_page", therapy_id=therapy_id))
