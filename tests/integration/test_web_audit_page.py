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


def test_the_audit_page_filters_by_actor_and_date_links_subjects_and_shows_the_chain_head(app, api, world, clock):
    import sqlalchemy as sa

    from server.store import audit
    from server.store.extensions import db

    from ..support.journeys import start

    therapy = start(api, world["coord"])
    auditor = _auditor(app)
    page = auditor.get("/audit?actor=coord").get_data(as_text=True)
    actors = set(re.findall(r"<tr><td>\d+</td><td>[^<]*</td><td>([^<]+)</td>", page))
    assert actors == {"coord"}
    assert f'href="/therapies/{therapy["id"]}"' in page, "a therapy subject links to its page"
    with app.app_context():
        head = audit.verify()
        audit.seal()
        seal = db.session.execute(sa.text("SELECT id, hash FROM audit_seal")).one()
    shown = re.search(r'data-testid="chain-head">Chain heads: (\d+) entries in (\d+) chains\.', page)
    assert shown and (int(shown.group(1)), int(shown.group(2))) == (head["checked"], head["chains"])
    verified = auditor.get("/audit?actor=coord&verify=1").get_data(as_text=True)
    shown = re.search(
        r'Chain heads: (\d+) entries in \d+ chains, verified hash <span class="mono">([0-9a-f]+)</span>\.\s+'
        r'Latest seal: (\d+), hash <span class="mono">([0-9a-f]+)</span>',
        verified,
    )
    assert shown and shown.groups() == (str(head["checked"]), head["last_hash"], str(seal[0]), seal[1])
    today = clock.now.date().isoformat()  # the audit trail records the server's clock (the tests' fake one)
    assert _sequence_numbers(auditor.get(f"/audit?from={today}&to={today}").get_data(as_text=True))
    assert _sequence_numbers(auditor.get("/audit?from=2000-01-01&to=2000-01-02").get_data(as_text=True)) == []


def test_the_audit_trail_downloads_as_csv_with_its_hashes(app, api, world):
    import csv
    import io

    from ..support.journeys import start

    start(api, world["coord"])
    exported = _auditor(app).get("/audit.csv?action=therapy.started")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert [r["action"] for r in rows] == ["therapy.started"]
    assert len(rows[0]["hash"]) == 64 and rows[0]["actor"] == "coord"
    everything = list(csv.DictReader(io.StringIO(_auditor(app).get("/audit.csv").get_data(as_text=True))))
    assert [int(r["seq"]) for r in everything] == list(range(1, len(everything) + 1))
    chains: dict[str, list] = {}
    for row in everything:
        chains.setdefault(row["chain"], []).append(row)
    for rows in chains.values():  # each entry links to the one before it in its chain
        assert [int(r["chain_seq"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["prev_hash"] == p["hash"] for p, r in zip(rows, rows[1:], strict=False))
