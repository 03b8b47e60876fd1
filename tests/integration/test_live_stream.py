"""The live event stream as the control tower page opens it (no API round trip), and the stream's cursor."""

from __future__ import annotations

from .test_account_commands import _user
from .test_sessions import log_in


def _sse_ids(text: str) -> list[int]:
    return [int(line.removeprefix("id: ")) for line in text.splitlines() if line.startswith("id: ")]


def test_the_page_streams_what_its_user_may_see_and_resumes_after_last_event_id(api, world, app):
    app.config["EVENTS_STREAM_SECONDS"] = 0.3
    body = {"process_key": "mini_therapy", "patient": {"reference": "PT-1"}}
    at_a = api.as_(world["coord"]).post("/api/v1/therapies", json={**body, "site": "SITE-A"}).get_json()
    at_b = api.as_(world["coordb"]).post("/api/v1/therapies", json={**body, "site": "SITE-B"}).get_json()
    page = app.test_client()
    log_in(page, "coordb")

    answer = page.get("/live/events", headers={"Last-Event-ID": "0"})
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    text = answer.get_data(as_text=True)
    assert at_b["id"] in text and at_a["id"] not in text
    ids = _sse_ids(text)
    resumed = page.get("/live/events", headers={"Last-Event-ID": str(ids[-2])}).get_data(as_text=True)
    assert _sse_ids(resumed) == ids[-1:]
    assert _sse_ids(page.get("/live/events").get_data(as_text=True)) == []  # from now on

    assert page.get("/live/events", headers={"Last-Event-ID": "soon"}).status_code == 400


def test_the_page_is_refused_a_stream_when_every_slot_is_taken(api, world, app):
    from server.integration import stream

    app.config["EVENTS_MAX_STREAMS"] = 1
    page = app.test_client()
    log_in(page, "coord")
    with app.test_request_context():
        held = stream.open_stream(_user("integrator"), None)  # the one slot, held until it closes
        assert page.get("/live/events").status_code == 429
        held.close()
    app.config["EVENTS_STREAM_SECONDS"] = 0.1
    assert page.get("/live/events").status_code == 200


def test_an_id_skipped_by_a_slower_transaction_is_still_sent_when_it_commits():
    from server.integration.stream import Cursor

    cursor = Cursor(after=2)
    cursor.advance(5)  # 3 and 4 not committed yet
    assert cursor.after == 5 and set(cursor.gaps) == {3, 4}
    cursor.advance(4)  # 4 commits late and is sent
    assert cursor.after == 5 and set(cursor.gaps) == {3}
    cursor.gaps[3] = 0.0  # 3 never commits (rolled back): forgotten after a while
    cursor.forget_old_gaps()
    assert cursor.gaps == {}
