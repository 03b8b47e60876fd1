"""Server-side web sessions: one row per login to the web pages, checked on every page request.

The signed session cookie carries a random token; the ``web_session`` row (keyed by the token's SHA-256)
says whether that login still holds. A session ends at logout, after ``TETHER_SESSION_HOURS`` however
active (and after ``TETHER_SESSION_IDLE_MINUTES`` without a page request, when set), and as soon as its
user's password is changed or reset or the account is locked or deactivated: a copied cookie then opens
nothing. Ended sessions stay in the table with when and why they ended.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import event, inspect, update
from sqlalchemy.orm import Session

from server.errors import Conflict
from server.store import audit
from server.store.extensions import db
from server.store.models import User, WebSession, utcnow
from server.store.uow import rows_changed, unit_of_work

log = logging.getLogger(__name__)

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often per session
# Why a session ended, as stored in ``end_reason``.
LOGOUT, EXPIRED, IDLE = "logout", "expired", "idle"
PASSWORD_CHANGED, ACCOUNT_LOCKED, ACCOUNT_DEACTIVATED = "password_changed", "account_locked", "account_deactivated"


def now() -> datetime:
    """The wall-clock time sessions are measured by (UTC)."""
    return utcnow()


def token_digest(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def lifetime() -> timedelta:
    """How long a login lasts at most (``TETHER_SESSION_HOURS``)."""
    return timedelta(hours=float(current_app.config["SESSION_HOURS"]))


def idle_limit() -> timedelta | None:
    """How long a session may go without a page request (``TETHER_SESSION_IDLE_MINUTES``; None: no limit)."""
    minutes = float(current_app.config.get("SESSION_IDLE_MINUTES") or 0)
    return timedelta(minutes=minutes) if minutes > 0 else None


def start(user: User) -> str:
    """Open a session for ``user`` (who has just logged in) and return its token for the cookie."""
    token = secrets.token_urlsafe(32)
    moment = now()
    with unit_of_work():
        db.session.add(
            WebSession(
                id=token_digest(token),
                user_id=user.id,
                created_at=moment,
                last_seen_at=moment,
                expires_at=moment + lifetime(),
            )
        )
    return token


def holder(token: str | None, user_id: object) -> User | None:
    """The user whose open session ``token`` is, or None; an expired or refused session is ended on the way.

    ``user_id`` is what the cookie says; it must be the session's user. A locked or deactivated user's
    session ends here too (also when the account was changed behind the application's back).
    """
    if not token or not isinstance(token, str) or not isinstance(user_id, int):
        return None
    record = db.session.get(WebSession, token_digest(token))
    if record is None or record.user_id != user_id or record.ended_at is not None:
        return None
    user = db.session.get(User, user_id)
    moment = now()
    idle = idle_limit()
    reason = (
        ACCOUNT_DEACTIVATED
        if user is None or not user.active
        else ACCOUNT_LOCKED
        if user.locked
        else EXPIRED
        if moment >= record.expires_at
        else IDLE
        if idle is not None and moment >= record.last_seen_at + idle
        else None
    )
    if reason is not None:
        _end_quietly(record.id, reason, user)
        return None
    if idle is not None and moment - record.last_seen_at >= TOUCH_EVERY:
        _touch(record.id, moment)
    return user


def end(token: str | None, user: User, reason: str = LOGOUT) -> bool:
    """End the session of ``token`` (at logout), audited as ``logout``; False when it was not open."""
    if not token or not isinstance(token, str):
        return False
    with unit_of_work():
        ended = _close(WebSession.id == token_digest(token), reason)
        audit.append(user.username, "logout", "user", str(user.id), data={"channel": "web", "ended": bool(ended)})
    return bool(ended)


def end_user_sessions(user_id: int, reason: str) -> int:
    """End every open session of a user, in the current transaction; returns how many were open."""
    return _close(WebSession.user_id == user_id, reason)


def _close(which, reason: str) -> int:
    """Mark the open sessions that ``which`` selects as ended now, for ``reason``."""
    statement = (
        update(WebSession)
        .where(which, WebSession.ended_at.is_(None))
        .values(ended_at=now(), end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(statement)


def _end_quietly(session_id: str, reason: str, user: User | None) -> None:
    """End one session found expired or refused (audited as ``session.ended``); a busy database only delays it."""
    try:
        with unit_of_work():
            if _close(WebSession.id == session_id, reason) and user is not None:
                audit.append(
                    "system",
                    "session.ended",
                    "user",
                    str(user.id),
                    data={"channel": "web", "username": user.username, "reason": reason},
                )
    except Conflict:
        log.warning("could not record the end of a web session (%s); it stays refused", reason)


def _touch(session_id: str, moment: datetime) -> None:
    """Record a page request of an open session (for the idle limit); a busy database skips it."""
    try:
        with unit_of_work():
            db.session.execute(
                update(WebSession)
                .where(WebSession.id == session_id)
                .values(last_seen_at=moment)
                .execution_options(synchronize_session=False)
            )
    except Conflict:
        log.warning("could not record a web session's activity")


def _account_changes(user: User) -> str | None:
    """Why a changed user's sessions must end (a new password, a lock, a deactivation), or None."""
    state = inspect(user)
    password = state.attrs.password_hash.history
    if password.has_changes():
        return PASSWORD_CHANGED
    locked = state.attrs.locked.history
    if locked.has_changes() and user.locked:
        return ACCOUNT_LOCKED
    active = state.attrs.active.history
    if active.has_changes() and not user.active:
        return ACCOUNT_DEACTIVATED
    return None


@event.listens_for(Session, "before_flush")
def _end_sessions_of_changed_accounts(session: Session, _context, _instances) -> None:
    """Whatever changes a password, locks or deactivates an account also ends its open web sessions."""
    for obj in list(session.dirty):
        if isinstance(obj, User) and obj.id is not None:
            reason = _account_changes(obj)
            if reason is not None:
                session.execute(
                    update(WebSession)
                    .where(WebSession.user_id == obj.id, WebSession.ended_at.is_(None))
                    .values(ended_at=now(), end_reason=reason)
                    .execution_options(synchronize_session=False)
                )
