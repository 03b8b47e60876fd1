"""Where the web pages send a browser next: only to a path of this server, never to another site."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from server.oversight import alerts
from server.store.extensions import db
from server.store.models import Alert, Site
from server.store.uow import unit_of_work

from .conftest import PASSWORD

# Targets a browser resolves to another host: scheme-relative, with a backslash (read as a slash), with a
# tab or newline (dropped by the URL parser), absolute, or not a path at all.
FOREIGN = [
    "//evil.example/x",
    "/\\evil.example/x",
    "/\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "https://evil.example/",
    "evil.example",
    "javascript:alert(1)",
]


def _csrf(client, path: str) -> str:
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def _log_in(client, next_url: str | None = None):
    data = {"username": "coord", "password": PASSWORD, "csrf_token": _csrf(client, "/login")}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data)


def _open_alert(app) -> str:
    """An open alert at the coordinator's site."""
    with app.app_context(), unit_of_work():
        site = db.session.execute(select(Site).where(Site.code == "SITE-A")).scalar_one()
        return alerts.raise_alert(None, "incident", "Check the freezer", "test", site_id=site.id).id


@pytest.mark.parametrize("target", FOREIGN)
def test_login_never_sends_the_browser_to_another_site(app, world, target):
    answer = _log_in(app.test_client(), target)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/"


def test_login_goes_on_to_a_local_page(app, world):
    answer = _log_in(app.test_client(), "/tasks?role=coordinator")
    assert answer.status_code == 302 and answer.headers["Location"] == "/tasks?role=coordinator"


@pytest.mark.parametrize("target", FOREIGN)
def test_acknowledging_an_alert_never_sends_the_browser_to_another_site(app, world, target):
    alert_id = _open_alert(app)
    client = app.test_client()
    _log_in(client)
    answer = client.post(
        f"/alerts/{alert_id}/acknowledge",
        data={"csrf_token": _csrf(client, "/alerts"), "note": "Checked", "back": target},
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/alerts"
    with app.app_context():
        assert db.session.get(Alert, alert_id).status == "acknowledged"


def test_acknowledging_an_alert_goes_back_to_a_local_page(app, world):
    alert_id = _open_alert(app)
    client = app.test_client()
    _log_in(client)
    answer = client.post(
        f"/alerts/{alert_id}/acknowledge",
        data={"csrf_token": _csrf(client, "/alerts"), "note": "Checked", "back": "/alerts?status=all"},
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/alerts?status=all"
