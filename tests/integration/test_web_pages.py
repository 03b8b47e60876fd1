"""The web pages through Flask's test client: sessions, CSRF, site scoping, and actions through the API's handlers."""

from __future__ import annotations

import re

from server.store.extensions import db
from server.store.models import AuditEntry, User

from ..support.pages import csrf
from .conftest import PASSWORD


def _log_in(client, username: str, password: str = PASSWORD, **kw):
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf(client)}, **kw)


def _start(api, token, site="SITE-A", patient="PT-1") -> dict:
    answer = api.as_(token).post(
        "/api/v1/therapies", json={"process_key": "mini_therapy", "site": site, "patient": {"reference": patient}}
    )
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def test_forms_without_csrf_token_are_refused_but_the_api_needs_none(app, world):
    client = app.test_client()
    refused = client.post("/login", data={"username": "coord", "password": PASSWORD})
    assert refused.status_code == 400 and "The form had expired" in refused.get_data(as_text=True)
    token = client.post("/api/v1/auth/token", json={"username": "coord", "password": PASSWORD})
    assert token.status_code == 201


def test_session_cookie_is_httponly_lax_and_secure_over_https(app, world):
    plain = _log_in(app.test_client(), "coord")
    assert plain.status_code == 302
    cookie = plain.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure_client = app.test_client()
    page = secure_client.get("/login", base_url="https://tether.example")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    secure = secure_client.post(
        "/login",
        base_url="https://tether.example",
        headers={"Referer": "https://tether.example/login"},
        data={"username": "coord", "password": PASSWORD, "csrf_token": token},
    )
    assert secure.status_code == 302 and "Secure" in secure.headers["Set-Cookie"]


def test_login_failures_are_audited_and_locked_accounts_refused(app, world):
    client = app.test_client()
    assert _log_in(client, "coord", "wrong-password-1").status_code == 401
    with app.app_context():
        user = db.session.query(User).filter_by(username="coord").one()
        user.locked = True
        db.session.commit()
    refused = _log_in(client, "coord")
    assert refused.status_code == 401 and "locked" in refused.get_data(as_text=True)
    with app.app_context():
        entries = db.session.query(AuditEntry).filter(AuditEntry.action == "login.failed").all()
        assert [e.data.get("channel") for e in entries] == ["web", "web"]


def test_a_session_ends_when_its_account_is_locked(app, world):
    client = app.test_client()
    _log_in(client, "coord")
    assert client.get("/tasks").status_code == 200
    with app.app_context():
        db.session.query(User).filter_by(username="coord").one().locked = True
        db.session.commit()
    assert client.get("/tasks").headers["Location"].startswith("/login")


def test_web_login_is_rate_limited(app, world):
    app.config["LOGIN_RATE_LIMIT"] = "2 per minute"
    client = app.test_client()
    codes = [_log_in(client, "coord", "wrong-password-1").status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_pages_keep_to_the_users_sites(app, api, world):
    other = _start(api, world["coordb"], site="SITE-B", patient="PT-B")
    mine = _start(api, world["coord"], patient="PT-A")
    client = app.test_client()
    _log_in(client, "coord")
    assert client.get(f"/therapies/{other['id']}").status_code == 404
    assert client.get(f"/therapies/{mine['id']}").status_code == 200
    inbox = client.get("/tasks").get_data(as_text=True)
    assert "PT-A" in inbox and "PT-B" not in inbox
    rows = client.get("/dashboard/rows?status=active").get_data(as_text=True)
    assert "PT-A" in rows and "PT-B" not in rows


def test_task_completed_in_a_page_goes_through_the_api_checks(app, api, world):
    therapy = _start(api, world["coord"])
    task = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"][0]
    client = app.test_client()
    _log_in(client, "coord")
    token = csrf(client, f"/tasks/{task['id']}")
    too_long = client.post(
        f"/tasks/{task['id']}", data={"csrf_token": token, "data.eligible": "true", "data.patient_initials": "ABCDEFG"}
    )
    assert too_long.status_code == 422
    assert 'id="f-data-patient_initials-error"' in too_long.get_data(as_text=True)
    assert "This is too long." in too_long.get_data(as_text=True)
    done = client.post(
        f"/tasks/{task['id']}", data={"csrf_token": token, "data.eligible": "true", "data.patient_initials": "ZZ"}
    )
    assert done.status_code == 302
    completed = api.as_(world["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()
    assert completed["status"] == "completed" and completed["completed_by"] == "coord"


def test_an_auditor_reads_pages_but_changes_nothing(app, api, world):
    therapy = _start(api, world["coord"])
    task = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"][0]
    client = app.test_client()
    _log_in(client, "auditor")
    assert client.get(f"/therapies/{therapy['id']}").status_code == 200
    assert "The chain is intact" in client.get("/audit?verify=1").get_data(as_text=True)
    refused = client.post(
        f"/tasks/{task['id']}",
        data={
            "csrf_token": csrf(client, f"/tasks/{task['id']}"),
            "data.eligible": "true",
            "data.patient_initials": "ZZ",
        },
    )
    assert refused.status_code == 403
    assert api.as_(world["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()["status"] == "ready"
