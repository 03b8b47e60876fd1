"""Who is looking at a page: the user of the session cookie, and the decorator that requires one."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for

from server import usecases
from server.access import web_sessions
from server.store.models import User

# Roles that may see the pages of each area (any role may see therapies it can see); an action's roles are its
# command's.
DESIGNERS = usecases.DeployDefinition.ROLES
AUDIT_READERS = ("auditor", "qa", "admin")
STARTERS = usecases.StartTherapy.ROLES
PLANNERS = usecases.OpenCapacity.ROLES


SESSION_KEY = "sid"  # the cookie's key for the token of the server-side session (``server.access.web_sessions``)


def session_user() -> User | None:
    """The user of this page request's open session, or None (the cookie is then cleared).

    The cookie must name an open server-side session of that user: one that has not been logged out, has
    not expired, and whose user is active and unlocked and has not changed the password since.
    """
    if getattr(g, "user", None) is not None:
        return g.user
    if not session.get(SESSION_KEY) and session.get("user_id") is None:
        return None
    user = web_sessions.holder(session.get(SESSION_KEY), session.get("user_id"))
    if user is None or session.get("username") != user.username:
        session.clear()
        return None
    g.user = user
    return user


def page_user() -> User:
    """The user of a page behind ``login_required``, which has already sent a request without one to log in."""
    user = session_user()
    if user is None:  # a view that is not behind login_required asked for its user
        raise RuntimeError("page_user() serves only views behind login_required")
    return user


def safe_next(target: str | None) -> str | None:
    """A local path to return to (after login, after a form); anything that may point elsewhere is dropped.

    Browsers read a backslash as a slash and drop tabs and newlines, so ``/\\host`` or ``/<tab>/host`` would
    lead to another site: a target with a backslash or a control character is not a local path.
    """
    if not target or "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def login_required(*roles: str):
    """Decorator: a logged-in user (holding one of ``roles`` when given) or a redirect to the login page."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = session_user()
            if user is None:
                return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
            if roles and not any(r in user.roles for r in roles):
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def has_role(user: User | None, *roles: str) -> bool:
    """Whether ``user`` holds one of ``roles``."""
    return user is not None and any(r in user.roles for r in roles)
