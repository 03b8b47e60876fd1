"""The audit page's paging bound: a sequence number pages back; anything else is ignored, never a 500."""

from __future__ import annotations

import re

import pytest

from .conftest import PASSWORD


def _auditor(app):
    client = app.test_client()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    assert (
        client.post("/login", data={"username": "auditor", "password": PASSWORD, "csrf_token": token}).status_code
        == 302
    )
    return client


def _sequence_numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", page)]


def test_before_pages_back_through_the_trail(app, world):
    client = _auditor(app)
    newest = _sequence_numbers(client.get("/audit").get_data(as_text=True))
    assert len(newest) > 3
    older = _sequence_numbers(client.get("/audit", query_string={"before": newest[2]}).get_data(as_text=True))
    assert older[0] == newest[3] and all(seq < newest[2] for seq in older)


# Not ASCII digits (superscript two, Arabic-Indic five), or past any 64-bit sequence number.
@pytest.mark.parametrize("before", ["\u00b2", "\u0665", "99999999999999999999", "-1", "abc", ""])
def test_a_before_that_is_no_sequence_number_is_ignored(app, world, before):
    client = _auditor(app)
    newest = _sequence_numbers(client.get("/audit").get_data(as_text=True))
    answer = client.get("/audit", query_string={"before": before})
    assert answer.status_code == 200
    assert _sequence_numbers(answer.get_data(as_text=True)) == newest
