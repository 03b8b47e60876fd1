"""Web sessions: they last as documented, end at logout, and die with a password change, a lock or a deactivation."""

from __future__ import annotations

import re
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
import sqlalchemy as sa

from server.access import web_sessions
from server.store.extensions import db
from server.store.models import AuditEntry, User, WebSession, utcnow

from ..support.pages import csrf
from .conftest import PASSWORD


def log_in(client, username: str = "coord", password: str = PASSWORD):
    answer = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf(client)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer


def logged_in(client) -> bool:
    """Whether a page opens (rather than sending the browser to the login page)."""
    page = client.get("/tasks")
    if page.status_code == 302:
        assert page.headers["Location"].startswith("/login")
        return False
    assert page.status_code == 200
    return True


def copy_of(app, client):
    """A second browser holding a copy of ``client``'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def user_id(app, username="coord") -> int:
    with app.app_context():
        return db.session.execute(sa.select(User.id).where(User.username == username)).scalar_one()


def sessions(app, username="coord") -> list[tuple]:
    """(ended, end_reason) of the user's sessions, oldest first."""
    with app.app_context():
        rows = (
            db.session.execute(
                sa.select(WebSession)
                .where(WebSession.user_id == user_id(app, username))
                .order_by(WebSession.created_at)
            )
            .scalars()
            .all()
        )
        return [(row.ended_at is not None, row.end_reason) for row in rows]


def audit_actions(app, *actions):
    with app.app_context():
        rows = (
            db.session.execute(sa.select(AuditEntry).where(AuditEntry.action.in_(actions)).order_by(AuditEntry.seq))
            .scalars()
            .all()
        )
        # the request id each entry names is tested with the audit trail (test_compliance)
        return [(e.action, {k: v for k, v in e.data.items() if k != "request_id"}) for e in rows]


@pytest.fixture
def later(monkeypatch):
    """Move the sessions' clock forward: ``later(hours=8)``."""
    start = utcnow()

    def move(**delta):
        monkeypatch.setattr(web_sessions, "now", lambda: start + timedelta(**delta))

    return move


def test_the_cookie_lasts_eight_hours_not_a_month(app, world):
    answer = log_in(app.test_client())
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", answer.headers["Set-Cookie"]).group(1))
    assert abs(expires - (utcnow() + timedelta(hours=8))) < timedelta(minutes=5)


def test_a_session_ends_after_eight_hours_however_active(app, world, later):
    client = app.test_client()
    log_in(client)
    thief = copy_of(app, client)
    for hours in (1, 4, 7.9):
        later(hours=hours)
        assert logged_in(client)
    later(hours=8, minutes=1)
    assert not logged_in(client)
    later(hours=8, minutes=2)
    assert not logged_in(thief)
    assert sessions(app) == [(True, "expired")]
    [(action, data)] = audit_actions(app, "session.ended")
    assert data == {"channel": "web", "username": "coord", "reason": "expired"}


def test_an_idle_limit_ends_a_session_left_alone(app, world, later):
    app.config["SESSION_IDLE_MINUTES"] = 30
    client = app.test_client()
    log_in(client)
    later(minutes=20)
    assert logged_in(client)
    later(minutes=45)  # 25 minutes after the last page
    assert logged_in(client)
    later(minutes=76)
    assert not logged_in(client)
    assert sessions(app) == [(True, "idle")]


def test_a_copied_cookie_opens_nothing_after_logout(app, world):
    client = app.test_client()
    log_in(client)
    thief = copy_of(app, client)
    assert logged_in(thief)
    assert client.post("/logout", data={"csrf_token": csrf(client, "/tasks")}).status_code == 302
    assert not logged_in(client)
    assert not logged_in(thief)
    assert sessions(app) == [(True, "logout")]
    assert audit_actions(app, "logout") == [("logout", {"channel": "web", "ended": True})]


def test_a_password_reset_ends_every_session_of_the_user(app, api, world):
    first, second, other = app.test_client(), app.test_client(), app.test_client()
    log_in(first)
    log_in(second)
    log_in(other, "coordb")
    thief = copy_of(app, first)
    reset = api.as_(world["admin"]).post(f"/api/v1/users/{user_id(app)}/password", json={"password": "new-password-42"})
    assert reset.status_code == 200, reset.get_json()
    assert not any(logged_in(c) for c in (first, second, thief))
    assert logged_in(other)  # another user's session is untouched
    assert sessions(app) == [(True, "password_changed")] * 2
    [(_action, data)] = audit_actions(app, "user.password_changed")
    assert data == {"username": "coord", "sessions_ended": 2}
    log_in(first, password="new-password-42")
    assert logged_in(first)


def test_a_lock_ends_the_session_for_good_even_after_unlocking(app, api, world):
    client = app.test_client()
    log_in(client)
    thief = copy_of(app, client)
    with app.app_context():  # what five failed signatures in a row do
        db.session.execute(sa.select(User).where(User.username == "coord")).scalar_one().locked = True
        db.session.commit()
    assert sessions(app) == [(True, "account_locked")]
    unlocked = api.as_(world["admin"]).post(f"/api/v1/users/{user_id(app)}/unlock", json={"reason": "verified"})
    assert unlocked.status_code == 200 and unlocked.get_json()["unlocked"] is True
    assert not logged_in(client) and not logged_in(thief)


def test_five_failed_signatures_end_the_web_session_for_good(app, api, world):
    from .test_compliance import at_receipt, sign

    client = app.test_client()
    log_in(client, "logistics")
    _therapy, task = at_receipt(api, world)
    for attempt in range(1, 6):
        assert sign(api, world["logistics"], task["id"], password=f"guess-number-{attempt}").status_code == 401
    assert sessions(app, "logistics") == [(True, "account_locked")]
    unlocked = api.as_(world["admin"]).post(f"/api/v1/users/{user_id(app, 'logistics')}/unlock", json={})
    assert unlocked.status_code == 200 and unlocked.get_json()["unlocked"] is True
    assert not logged_in(client)


def test_the_defaults_are_the_documented_ones():
    from server.config import from_environment

    settings = from_environment({})
    assert settings["SESSION_HOURS"] == 8 and settings["SESSION_IDLE_MINUTES"] == 0
    assert settings["WEBHOOK_ALLOW_PRIVATE"] is False


def test_a_deactivation_ends_the_session_for_good(app, api, world):
    client = app.test_client()
    log_in(client)
    path = f"/api/v1/users/{user_id(app)}"
    assert (
        api.as_(world["admin"])
        .client.patch(path, json={"active": False}, headers={"Authorization": f"Bearer {world['admin']}"})
        .status_code
        == 200
    )
    assert sessions(app) == [(True, "account_deactivated")]
    assert (
        api.as_(world["admin"])
        .client.patch(path, json={"active": True}, headers={"Authorization": f"Bearer {world['admin']}"})
        .status_code
        == 200
    )
    assert not logged_in(client)
    [(_action, data)] = audit_actions(app, "user.deactivated")
    assert data["sessions_ended"] == 1


def test_a_lock_behind_the_applications_back_still_ends_the_session(app, world):
    client = app.test_client()
    log_in(client)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE user_account SET locked = :yes WHERE username = 'coord'"), {"yes": True})
    assert not logged_in(client)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE user_account SET locked = :no WHERE username = 'coord'"), {"no": False})
    assert not logged_in(client)
    assert sessions(app) == [(True, "account_locked")]


def test_the_database_keeps_only_a_digest_of_the_session_token(app, world):
    client = app.test_client()
    log_in(client)
    with app.app_context():
        [row] = db.session.execute(sa.select(WebSession)).scalars().all()
    with app.test_request_context():
        from flask import current_app

        cookie = current_app.session_interface.get_signing_serializer(current_app).loads(
            client.get_cookie("session").value
        )
    assert row.id == web_sessions.token_digest(cookie["sid"]) != cookie["sid"]
