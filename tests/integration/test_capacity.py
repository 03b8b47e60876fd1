"""Capacity and bookings: slots opened by planners (one or by recurrence), bookings that never double-book,
moves with a reason code, blackout days, and the places a cancelled therapy frees."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import Booking, OutboxEvent, Slot

from .test_therapy_network import NETWORK, _start, _therapy


def _iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _open(api, token, clock, *, days=2, hours=8, site="MFG-1", kind="manufacturing", capacity=1, **extra):
    start = clock.now.replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=days)
    body = {
        "site": site,
        "kind": kind,
        "start": _iso(start),
        "end": _iso(start + timedelta(hours=hours)),
        "capacity": capacity,
        **extra,
    }
    return api.as_(token).post("/api/v1/capacity", json=body)


def _slot(api, token, clock, **kw) -> dict:
    opened = _open(api, token, clock, **kw)
    assert opened.status_code == 201, opened.get_json()
    return opened.get_json()["slots"][0]


def _book(api, token, therapy_id, slot_id, **extra):
    return api.as_(token).post(f"/api/v1/therapies/{therapy_id}/bookings", json={"slot_id": slot_id, **extra})


def test_a_planner_opens_a_weekly_recurrence_at_its_own_site(api, network, clock):
    opened = _open(api, network["planner1"], clock, capacity=2, recurrence="FREQ=WEEKLY;BYDAY=MO,TH;COUNT=4")
    assert opened.status_code == 201, opened.get_json()
    slots = opened.get_json()["slots"]
    assert len(slots) == 4 and {(s["site"], s["kind"], s["capacity"], s["booked"]) for s in slots} == {
        ("MFG-1", "manufacturing", 2, 0)
    }
    listed = api.as_(network["coord"]).get("/api/v1/slots?site=MFG-1&kind=manufacturing").get_json()["items"]
    assert [s["id"] for s in listed] == [s["id"] for s in slots]
    assert [s["start"] for s in listed] == sorted(s["start"] for s in listed)
    elsewhere = _open(api, network["planner1"], clock, site="MFG-2")
    assert elsewhere.status_code == 403


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"hours": -2}, 422, "invalid_request"),
        ({"recurrence": "FREQ=DAILY"}, 422, "invalid_recurrence"),
        ({"recurrence": "FREQ=DAILY;COUNT=10000"}, 422, "too_many_occurrences"),
        ({"recurrence": "FREQ=SOMETIMES;COUNT=2"}, 422, "invalid_recurrence"),
        ({"recurrence": "FREQ=DAILY;COUNT=0"}, 422, "invalid_recurrence"),
        ({"recurrence": "FREQ=DAILY;UNTIL=20000101T000000Z"}, 422, "invalid_recurrence"),
        ({"days": -1}, 422, "slot_in_past"),
        ({"site": "SITE-A"}, 422, "wrong_site_kind"),
        ({"capacity": 0}, 422, "invalid_request"),
        ({"capacity": -3}, 422, "invalid_request"),
        ({"kind": "dinner"}, 422, "invalid_request"),
        ({"site": "NOWHERE"}, 422, "unknown_site"),
    ],
)
def test_bad_capacity_is_refused_and_opens_nothing(api, network, clock, change, status, code):
    refused = _open(api, network["admin"], clock, **change)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (status, code), refused.get_json()
    assert api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"] == []


def test_overlapping_slots_of_a_site_and_kind_are_refused(api, network, clock):
    first = _slot(api, network["planner1"], clock)
    overlap = _open(api, network["planner1"], clock, hours=10)
    assert overlap.status_code == 409 and overlap.get_json()["error"]["details"]["slot_id"] == first["id"]
    assert _open(api, network["planner1"], clock, site="MFG-1", days=3).status_code == 201


def test_booking_takes_a_place_carries_the_dates_into_the_process_and_moves_with_a_reason(app, api, network, clock):
    therapy = _start(api, network["coord"]).get_json()
    first = _slot(api, network["planner1"], clock)
    later = _slot(api, network["planner1"], clock, days=5)
    booked = _book(api, network["coord"], therapy["id"], first["id"])
    assert booked.status_code == 201, booked.get_json()
    assert {k: booked.get_json()[k] for k in ("kind", "site", "start", "status")} == {
        "kind": "manufacturing",
        "site": "MFG-1",
        "start": first["start"],
        "status": "booked",
    }
    detail = _therapy(api, network["coord"], therapy["id"]).get_json()
    assert detail["data"]["bookings"]["manufacturing"]["start"] == first["start"]
    assert [(b["kind"], b["slot_id"]) for b in detail["bookings"]] == [("manufacturing", first["id"])]
    unexplained = _book(api, network["coord"], therapy["id"], later["id"])
    assert unexplained.status_code == 422 and unexplained.get_json()["error"]["code"] == "reason_code_required"
    moved = _book(api, network["coord"], therapy["id"], later["id"], reason_code="SITE_CAPACITY")
    assert moved.status_code == 201, moved.get_json()
    slots = {s["id"]: s["booked"] for s in api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"]}
    assert slots == {first["id"]: 0, later["id"]: 1}
    history = api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}/bookings").get_json()["items"]
    assert [b["status"] for b in history] == ["moved", "booked"]
    detail = _therapy(api, network["coord"], therapy["id"]).get_json()
    assert detail["data"]["bookings"]["manufacturing"]["slot_id"] == later["id"]
    with app.app_context():
        types = db.session.execute(
            select(OutboxEvent.type).where(OutboxEvent.type.like("booking.%")).order_by(OutboxEvent.id)
        ).scalars()
        assert list(types) == ["booking.created", "booking.moved"]


def test_wrong_bookings_are_refused_and_change_nothing(api, network, clock):
    therapy = _start(api, network["coord"]).get_json()
    at_mfg2 = _slot(api, network["admin"], clock, site="MFG-2")
    wrong = _book(api, network["coord"], therapy["id"], at_mfg2["id"])
    assert wrong.status_code == 422 and wrong.get_json()["error"]["code"] == "wrong_site"
    full = _slot(api, network["planner1"], clock, days=4)
    other = _start(api, network["coord"]).get_json()
    assert _book(api, network["coord"], other["id"], full["id"]).status_code == 201
    refused = _book(api, network["coord"], therapy["id"], full["id"])
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "slot_full"
    assert _book(api, network["coordb"], therapy["id"], full["id"]).status_code == 404  # SITE-B takes no part
    unknown = _book(api, network["coord"], therapy["id"], "no-such-slot")
    assert unknown.status_code == 404
    assert api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}/bookings").get_json()["items"] == []


def test_of_many_concurrent_requests_for_the_last_places_exactly_that_many_win(app, api, network, clock):
    slot = _slot(api, network["planner1"], clock, capacity=3)
    therapies = [_start(api, network["coord"]).get_json()["id"] for _ in range(8)]
    answers: list[int] = []
    barrier = threading.Barrier(len(therapies))

    def book(therapy_id: str) -> None:
        client = type(api)(app.test_client(), network["coord"])
        barrier.wait()
        answers.append(_book(client, network["coord"], therapy_id, slot["id"]).status_code)

    threads = [threading.Thread(target=book, args=(t,)) for t in therapies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201, 201, 201, 409, 409, 409, 409, 409]
    with app.app_context():
        assert db.session.get_one(Slot, slot["id"]).booked == 3
        taken = db.session.execute(select(Booking).where(Booking.slot_id == slot["id"])).scalars().all()
        assert len(taken) == 3 and {b.status for b in taken} == {"booked"}


def test_capacity_changes_and_closing_respect_the_places_booked(api, network, clock):
    slot = _slot(api, network["planner1"], clock, capacity=2)
    therapy = _start(api, network["coord"]).get_json()
    assert _book(api, network["coord"], therapy["id"], slot["id"]).status_code == 201
    url = f"/api/v1/slots/{slot['id']}"
    below = network_patch(api, network["planner1"], url, {"capacity": 0})
    assert below.status_code == 422
    assert network_patch(api, network["planner1"], url, {"capacity": 1}).get_json()["capacity"] == 1
    closed = api.client.delete(url, headers={"Authorization": f"Bearer {network['planner1']}"})
    assert closed.status_code == 409 and closed.get_json()["error"]["code"] == "slot_booked"
    empty = _slot(api, network["planner1"], clock, days=6)
    gone = api.client.delete(f"/api/v1/slots/{empty['id']}", headers={"Authorization": f"Bearer {network['planner1']}"})
    assert gone.status_code == 200 and gone.get_json()["status"] == "closed"
    listed = [s["id"] for s in api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"]]
    assert listed == [slot["id"]]


def network_patch(api, token, url, body):
    return api.client.patch(url, json=body, headers={"Authorization": f"Bearer {token}"})


def test_a_blackout_day_closes_its_free_slots_and_recurrences_skip_it(api, network, clock):
    free = _slot(api, network["planner1"], clock, days=3)
    day = free["start"][:10]
    dark = api.as_(network["planner1"]).post(
        "/api/v1/capacity/blackouts", json={"site": "MFG-1", "day": day, "reason": "Cleanroom requalification"}
    )
    assert dark.status_code == 201 and dark.get_json()["slots_closed"] == 1
    assert api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"] == []
    weekly = _open(api, network["planner1"], clock, days=1, recurrence="FREQ=DAILY;COUNT=4")
    assert weekly.status_code == 201
    assert weekly.get_json()["skipped_blackout_days"] == [day]
    assert len(weekly.get_json()["slots"]) == 3
    single = _open(api, network["planner1"], clock, days=3, hours=2)
    assert single.status_code == 422 and single.get_json()["error"]["code"] == "blackout"


def test_cancelling_a_therapy_frees_its_places(app, api, network, clock):
    therapy = _start(api, network["coord"], {**NETWORK}).get_json()
    slot = _slot(api, network["planner1"], clock)
    assert _book(api, network["coord"], therapy["id"], slot["id"]).status_code == 201
    cancelled = api.as_(network["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason_code": "PATIENT_WITHDREW"}
    )
    assert cancelled.status_code == 200, cancelled.get_json()
    [item] = api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"]
    assert item["booked"] == 0
    [booking] = api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}/bookings").get_json()["items"]
    assert booking["status"] == "cancelled"


def test_a_booking_is_cancelled_with_a_reason_code(api, network, clock):
    therapy = _start(api, network["coord"]).get_json()
    slot = _slot(api, network["planner1"], clock)
    booking = _book(api, network["coord"], therapy["id"], slot["id"]).get_json()
    url = f"/api/v1/therapies/{therapy['id']}/bookings/{booking['id']}/cancel"
    assert api.as_(network["coord"]).post(url, json={"reason_code": "NONSENSE"}).status_code == 422
    done = api.as_(network["coord"]).post(url, json={"reason_code": "PATIENT_INELIGIBLE"})
    assert done.status_code == 200 and done.get_json()["status"] == "cancelled"
    again = api.as_(network["coord"]).post(url, json={"reason_code": "PATIENT_INELIGIBLE"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_booked"
    assert api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"][0]["booked"] == 0


def test_schedule_options_chain_free_slots_within_the_declared_lead_times(api, network, clock):
    admin = network["admin"]
    collection = _slot(api, admin, clock, site="SITE-A", kind="apheresis", days=2, hours=4)  # 08:00-12:00
    too_soon = _slot(api, admin, clock, days=2, hours=1)  # 08:00: before the collection ends
    first_fit = _slot(api, admin, clock, days=3, hours=8)  # the next morning: within 2 h to 48 h
    _slot(api, admin, clock, days=6, hours=8)  # day 6: beyond 48 h after the collection
    infusion = _slot(api, admin, clock, site="SITE-A", kind="infusion", days=5, hours=2)  # 1 to 10 days after
    later_collection = _slot(api, admin, clock, site="SITE-A", kind="apheresis", days=9, hours=4)
    answer = api.as_(network["coord"]).get(
        "/api/v1/schedule/options?process_key=network_therapy&site=SITE-A&manufacturing=MFG-1"
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["lead_times"] == {
        "apheresisToManufacturing": [7200.0, 172800.0],
        "manufacturingToInfusion": [86400.0, 864000.0],
    }
    [chain] = body["items"]  # the later collection has no manufacturing slot within 48 h
    assert (chain["apheresis"]["id"], chain["manufacturing"]["id"], chain["infusion"]["id"]) == (
        collection["id"],
        first_fit["id"],
        infusion["id"],
    )
    assert too_soon["id"] not in str(body) and later_collection["id"] not in str(body)
    therapy = _start(api, network["coord"]).get_json()
    by_therapy = api.as_(network["coord"]).get(f"/api/v1/schedule/options?therapy_id={therapy['id']}").get_json()
    assert by_therapy["items"] == body["items"]
    assert _book(api, network["coord"], therapy["id"], first_fit["id"]).status_code == 201
    after = api.as_(network["coord"]).get(f"/api/v1/schedule/options?therapy_id={therapy['id']}").get_json()
    assert after["items"] == []  # the one manufacturing slot that fits is taken


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("process_key=nope&site=SITE-A&manufacturing=MFG-1", "unknown_process"),
        ("process_key=network_therapy&site=SITE-A", "invalid_request"),
        ("process_key=network_therapy&site=SITE-A&manufacturing=SITE-B", "wrong_site_kind"),
        ("process_key=network_therapy&site=SITE-A&manufacturing=MFG-1&limit=0", "invalid_filter"),
    ],
)
def test_schedule_options_explain_a_wrong_question(api, network, query, code):
    refused = api.as_(network["coord"]).get(f"/api/v1/schedule/options?{query}")
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == code, refused.get_json()


def test_an_infusion_is_booked_at_the_apheresis_or_the_treatment_site(api, network, clock):
    therapy = _start(api, network["coord"], {"apheresis": "SITE-B"}).get_json()  # collected at another centre
    at_apheresis = _slot(api, network["admin"], clock, site="SITE-B", kind="infusion")
    assert _book(api, network["coord"], therapy["id"], at_apheresis["id"]).status_code == 201
    elsewhere = _start(api, network["coord"]).get_json()  # collected and treated at SITE-A
    wrong = _book(
        api,
        network["coord"],
        elsewhere["id"],
        _slot(api, network["admin"], clock, site="SITE-B", kind="infusion", days=4)["id"],
    )
    assert wrong.status_code == 422 and wrong.get_json()["error"]["code"] == "wrong_site"
