"""A URL no route knows: a browser gets the error page, the API and clients that ask for JSON get the API's error."""

from __future__ import annotations

import pytest

from ..support.pages import signed_in

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/no-such-page", "/therapies/x/y/z", "/dashboard/nothing/here"])
def test_a_browser_gets_a_page_for_an_unknown_url(app, world, path):
    answer = signed_in(app, "coord").get(path, headers={"Accept": BROWSER})
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "There is no such page" in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("path", "accept"), [("/api/v1/no-such", BROWSER), ("/no-such-page", "application/json"), ("/no-such-page", None)]
)
def test_the_api_and_json_clients_get_json(app, world, path, accept):
    answer = app.test_client().get(path, headers={"Accept": accept} if accept else {})
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"
