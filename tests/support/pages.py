"""The web pages as the integration tests open them with Flask's test client: a form's CSRF token and a
logged-in browser."""

from __future__ import annotations

import re

from ..integration.conftest import PASSWORD


def csrf(client, path: str = "/login") -> str:
    """The CSRF token of the form on the page at ``path``."""
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def signed_in(app, username: str = "coord", password: str = PASSWORD):
    """A test client logged in to the pages as ``username`` (the login redirects, 302)."""
    client = app.test_client()
    answer = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf(client)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client
