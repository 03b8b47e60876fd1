"""Logging in and out of the web pages (session cookie): the API's login check, audit and rate limit."""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for

from server.access import web_sessions
from server.access.auth import check_login

from ..errors import ApiError
from ..ratelimit import login_limited
from . import bp
from .session import SESSION_KEY, has_role, login_required, safe_next, session_user


@bp.get("/login")
def login():
    """The login form (or straight on, when already logged in)."""
    next_url = safe_next(request.args.get("next"))
    if session_user() is not None:
        return redirect(next_url or url_for("web.home"))
    return render_template("web/login.html", next_url=next_url, error=None, username="")


@bp.post("/login")
@login_limited
def login_submit():
    """Check the password (audited as ``login.succeeded``/``login.failed``), then start a fresh session."""
    next_url = safe_next(request.form.get("next"))
    username = (request.form.get("username") or "").strip()
    try:
        user = check_login(username, request.form.get("password") or "", channel="web")
    except ApiError:
        return render_template(
            "web/login.html",
            next_url=next_url,
            username=username,
            error="The username or password is wrong, or the account is locked.",
        ), 401
    token = web_sessions.start(user)
    session.clear()  # a new session on every login (no fixation)
    session.permanent = True
    session[SESSION_KEY], session["user_id"], session["username"] = token, user.id, user.username
    return redirect(next_url or url_for("web.home"))


@bp.post("/logout")
def logout():
    """End the session on the server (audited), so that a copy of the cookie opens nothing either."""
    user = session_user()
    if user is not None:
        web_sessions.end(session.get(SESSION_KEY), user)
    session.clear()
    return redirect(url_for("web.login"))


@bp.get("/")
@login_required()
def home():
    """Where each role starts: designers at the definitions, auditors at the dashboard, staff at their tasks."""
    user = session_user()
    if has_role(user, "designer") and not has_role(user, "admin"):
        return redirect(url_for("web.definitions"))
    if has_role(user, "auditor", "integrator"):
        return redirect(url_for("web.dashboard"))
    return redirect(url_for("web.inbox"))
