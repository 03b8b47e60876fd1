"""The scale benchmark's bulk seeder (``bench._seed``), on a small number of therapies: every copy has the
parties its process names and its booked places, consistent with its slots and its process data, and what a
site's user sees through the API follows from them."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from bench._common import backends, fresh_database, make_app
from bench._seed import MANUFACTURING_SITE, seed


@pytest.fixture(scope="module", params=backends())
def seeded(request):
    """One small seed per backend for the module's tests (they only read it)."""
    with fresh_database(request.param) as url:
        app = make_app(url)
        result = seed(url, therapies=40, active=20, sites=2, app=app, echo=lambda _line: None)
        yield app, result
        with app.app_context():
            from server.store.extensions import db

            db.session.remove()
            db.engine.dispose()


def _rows(app, sql: str) -> list:
    from server.store.extensions import db

    with app.app_context():
        rows = db.session.execute(sa.text(sql)).all()
        db.session.remove()
        return rows


def test_every_therapy_has_its_parties_at_their_sites(seeded):
    app, result = seeded
    therapies = _rows(app, "SELECT t.id, s.code FROM therapy t JOIN site s ON s.id = t.site_id")
    assert len(therapies) == 40
    parties = {
        (therapy, party): code
        for therapy, party, code in _rows(
            app, "SELECT p.therapy_id, p.party, s.code FROM therapy_party p JOIN site s ON s.id = p.site_id"
        )
    }
    for therapy, centre in therapies:
        assert parties[(therapy, "treatment")] == centre
        assert parties[(therapy, "manufacturing")] == MANUFACTURING_SITE
        assert parties[(therapy, "logistics")] == "LOG-1"
    assert len(parties) == 3 * 40  # the centre collects (apheresis): no row of its own
    # each task is at its party's site: manufacturing's at MFG-1, the centre's at the therapy's site
    tasks = _rows(
        app,
        "SELECT k.party, s.code, c.code FROM task k JOIN site s ON s.id = k.site_id "
        "JOIN therapy t ON t.id = k.therapy_id JOIN site c ON c.id = t.site_id",
    )
    assert {code for party, code, _centre in tasks if party == "manufacturing"} == {MANUFACTURING_SITE}
    assert all(code == centre for party, code, centre in tasks if party in ("treatment", "apheresis"))
    assert not _rows(app, "SELECT id FROM task WHERE site_id IS NULL")


def test_every_therapy_holds_its_booked_places_as_its_slots_and_process_data_say(seeded):
    app, _result = seeded
    bookings = _rows(
        app,
        "SELECT b.therapy_id, b.kind, b.slot_id, s.code, sl.kind, t.data, c.code FROM booking b "
        "JOIN slot sl ON sl.id = b.slot_id JOIN site s ON s.id = sl.site_id "
        "JOIN therapy t ON t.id = b.therapy_id JOIN site c ON c.id = t.site_id WHERE b.status = 'booked'",
    )
    assert len(bookings) == 2 * 40  # an apheresis place at the centre, a manufacturing run at MFG-1
    for _therapy, kind, slot_id, code, slot_kind, data, centre in bookings:
        assert kind == slot_kind
        assert code == (centre if kind == "apheresis" else MANUFACTURING_SITE)
        named = (json.loads(data) if isinstance(data, str) else data)["bookings"][kind]
        assert named["slot_id"] == slot_id and named["site"] == code
    # no slot holds more than its places, and each counts exactly its booked places
    assert not _rows(
        app,
        "SELECT id FROM slot s WHERE booked > capacity OR booked <> "
        "(SELECT count(*) FROM booking b WHERE b.slot_id = s.id AND b.status = 'booked')",
    )
    free = _rows(app, "SELECT kind, count(*) FROM slot WHERE booked = 0 GROUP BY kind")
    assert {kind for kind, count in free if count > 0} == {"apheresis", "infusion", "manufacturing"}


def test_the_manufacturing_sites_user_sees_its_tasks_and_the_chain_verifies(seeded):
    app, result = seeded
    client = app.test_client()
    answer = client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {result.tokens['manufacturing']}"})
    assert answer.status_code == 200, answer.get_json()
    items = answer.get_json()["items"]
    assert items and all(task["role"] == "manufacturing" for task in items)
    listed = client.get("/api/v1/therapies", headers={"Authorization": f"Bearer {result.tokens['manufacturing']}"})
    assert listed.status_code == 200 and len(listed.get_json()["items"]) > 0
    with app.app_context():
        from server.store import audit

        assert audit.verify()["ok"] is True
