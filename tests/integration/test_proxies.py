"""Behind a proxy: with TETHER_TRUSTED_PROXIES the X-Forwarded-* headers the proxy adds say who the client is and
that the page came over https; without it they are ignored, since any client could send them."""

from __future__ import annotations

import pytest

from server import create_app

from ..support.pages import csrf
from .conftest import PASSWORD, _app_config, _dispose


@pytest.fixture
def proxied(app, world, database_url, clock):
    """The same server behind one trusted proxy (on the test's database, with its users)."""
    behind = create_app({**_app_config(database_url, clock), "TRUSTED_PROXIES": 1})
    yield behind
    _dispose(behind)


def _wrong_logins(app, address: str, times: int) -> list[int]:
    client = app.test_client()
    body = {"username": "coord", "password": "wrong-password-1"}
    headers = {"X-Forwarded-For": address}
    return [client.post("/api/v1/auth/token", json=body, headers=headers).status_code for _ in range(times)]


def test_the_login_limit_counts_the_client_behind_a_trusted_proxy(proxied):
    proxied.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    assert _wrong_logins(proxied, "203.0.113.5", 4) == [401, 401, 401, 429]
    assert _wrong_logins(proxied, "203.0.113.6", 1) == [401]  # another client behind the same proxy


def test_without_trusted_proxies_a_forwarded_address_does_not_escape_the_limit(app, world):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    statuses = [_wrong_logins(app, f"203.0.113.{n}", 1)[0] for n in range(1, 5)]
    assert statuses == [401, 401, 401, 429]


def _web_login(app, headers: dict):
    client = app.test_client()
    token = csrf(client)
    data = {"username": "coord", "password": PASSWORD, "csrf_token": token}
    return client.post("/login", data=data, headers=headers)


def test_a_page_served_over_https_by_the_proxy_marks_its_cookie_secure(proxied):
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "tether.example",
        "Referer": "https://tether.example/login",
    }
    answer = _web_login(proxied, headers)
    assert answer.status_code == 302 and "Secure" in answer.headers["Set-Cookie"]


def test_without_trusted_proxies_a_forwarded_scheme_is_ignored(app, world):
    answer = _web_login(app, {"X-Forwarded-Proto": "https"})
    assert answer.status_code == 302 and "Secure" not in answer.headers["Set-Cookie"]


def test_a_negative_number_of_proxies_is_refused_at_start(database_url, clock, world):
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        create_app({**_app_config(database_url, clock), "TRUSTED_PROXIES": -1})
