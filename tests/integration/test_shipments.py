"""Courier tracking: shipments, their positions and data-logger readings, the late warning and the therapy page."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ..support.journeys import start as start_therapy
from ..support.journeys import to_receipt
from ..support.pages import csrf
from .conftest import PASSWORD


def z(moment) -> str:
    """A moment as the API writes it."""
    return moment.isoformat().replace("+00:00", "Z")


def start(api, world, reference="PT-1") -> dict:
    """A mini therapy at SITE-A: it waits on 'Enrol patient', whose 24-hour timer is the window."""
    return start_therapy(api, world["coord"], reference=reference)


def new_shipment(api, token, therapy, **extra):
    body = {
        "carrier": "ColdChain",
        "tracking_number": "CC-1001",
        "from_party": "treatment",
        "to_party": "MFG-1",
        "temperature_min_c": 2,
        "temperature_max_c": 8,
        **extra,
    }
    return api.as_(token).post(f"/api/v1/therapies/{therapy['id']}/shipments", json=body)


def created(api, token, therapy, **extra) -> dict:
    answer = new_shipment(api, token, therapy, **extra)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def count(app, model, **where) -> int:
    from server.store.extensions import db

    with app.app_context():
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return db.session.execute(query).scalar_one()


def late_alerts(api, token, therapy) -> list[dict]:
    answer = api.as_(token).get(f"/api/v1/alerts?therapy_id={therapy['id']}&kind=shipment_late")
    return answer.get_json()["items"]


def test_a_shipment_is_recorded_tracked_and_delivered_with_its_events(app, api, world, clock):
    therapy = start(api, world)
    eta = clock() + timedelta(hours=10)
    shipment = created(api, world["coord"], therapy, expected_arrival=z(eta))
    assert shipment["from_party"] == "SITE-A" and shipment["to_party"] == "MFG-1"  # a party as its site
    assert shipment["status"] == "in_transit" and shipment["expected_arrival"] == z(eta)
    assert shipment["temperature_range"] == [2, 8] and shipment["coi"] == therapy["coi"]
    assert shipment["window"]["activity_id"] == "Timer_EnrolLate" and shipment["late"] is False
    courier = api.as_(world["logistics"])
    route = [(48.14, 11.58), (48.4, 11.0), (48.78, 9.18)]
    for hours, (lat, lng) in enumerate(route):
        clock.advance(hours=1)
        moved = courier.post(
            f"/api/v1/shipments/{shipment['id']}/positions",
            json={"latitude": lat, "longitude": lng, "note": f"hub {hours}"},
        )
        assert moved.status_code == 201, moved.get_json()
        assert moved.get_json()["shipment"]["last_position"]["latitude"] == lat
    readings = courier.post(
        f"/api/v1/shipments/{shipment['id']}/readings",
        json={"readings": [{"recorded_at": z(clock() - timedelta(minutes=m)), "temperature_c": 5.0} for m in (9, 3)]},
    )
    assert readings.status_code == 201, readings.get_json()
    assert readings.get_json() == {"shipment_id": shipment["id"], "recorded": 2, "excursions": 0, "excursion": False}

    detail = api.as_(world["auditor"]).get(f"/api/v1/shipments/{shipment['id']}").get_json()
    assert [(p["latitude"], p["longitude"]) for p in detail["positions"]] == route
    assert [r["sensor_id"] for r in detail["readings"]] == ["CC-1001", "CC-1001"]  # the tracking number by default
    assert all(r["shipment_id"] == shipment["id"] for r in detail["readings"])
    conditions = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}/conditions").get_json()
    assert len(conditions["items"]) == 2  # the therapy's condition readings, as any reading

    delivered = api.as_(world["coord"]).patch(f"/api/v1/shipments/{shipment['id']}", json={"status": "delivered"})
    assert delivered.status_code == 200 and delivered.get_json()["status"] == "delivered"
    refused = courier.post(f"/api/v1/shipments/{shipment['id']}/positions", json={"latitude": 1, "longitude": 1})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "shipment_closed"

    listed = api.as_(world["mfg"]).get(f"/api/v1/therapies/{therapy['id']}/shipments").get_json()
    assert [s["id"] for s in listed["items"]] == [shipment["id"]]
    assert listed["items"][0]["last_position"]["note"] == "hub 2"
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    actions = [e["action"] for e in audit["items"]]
    assert actions.count("shipment.position") == 3
    assert {"shipment.created", "shipment.delivered", "condition.recorded"} <= set(actions)
    from server.store.models import OutboxEvent

    for kind in ("shipment.created", "shipment.position", "shipment.delivered"):
        assert count(app, OutboxEvent, type=kind) >= 1, kind


def test_bad_input_is_refused_clearly_and_nothing_is_half_applied(app, api, world, clock):
    from server.store.models import ConditionReading, Shipment, ShipmentPosition

    therapy = start(api, world)
    shipment = created(api, world["coord"], therapy)
    courier = api.as_(world["logistics"])
    path = f"/api/v1/shipments/{shipment['id']}"

    unknown = courier.post("/api/v1/shipments/no-such-shipment/positions", json={"latitude": 1, "longitude": 2})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["message"] == "No such shipment."
    assert api.as_(world["coord"]).get("/api/v1/shipments/" + "x" * 300).status_code == 404
    for body, field in (
        ({"latitude": 91, "longitude": 2}, "latitude"),
        ({"latitude": 10, "longitude": -180.5}, "longitude"),
        ({"longitude": 2}, "latitude"),
        ({"latitude": 1, "longitude": 2, "recorded_at": z(clock() + timedelta(hours=1))}, "recorded_at"),
        ({"latitude": 1, "longitude": 2, "speed": 80}, "speed"),
    ):
        answer = courier.post(f"{path}/positions", json=body)
        assert answer.status_code == 422, (body, answer.get_json())
        assert field in answer.get_json()["error"]["details"]["fields"], answer.get_json()
    malformed = courier.post(f"{path}/positions", data='{"latitude": 1,', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.get_json()["error"]["code"] == "malformed_json"
    one_in_the_future = courier.post(
        f"{path}/readings",
        json={
            "readings": [
                {"recorded_at": z(clock()), "temperature_c": 4},
                {"recorded_at": z(clock() + timedelta(hours=2)), "temperature_c": 4},
            ]
        },
    )
    assert one_in_the_future.status_code == 422
    assert api.as_(world["coordb"]).get(path).status_code == 404  # another site's coordinator
    other_site = api.as_(world["coordb"]).patch(path, json={"status": "lost"})
    assert other_site.status_code == 404
    assert api.as_(world["qa"]).post(f"{path}/positions", json={"latitude": 1, "longitude": 2}).status_code == 403
    assert api.as_(world["coord"]).patch(path, json={}).status_code == 422
    assert api.as_(world["coord"]).patch(path, json={"status": "misplaced"}).status_code == 422
    inverted = new_shipment(api, world["coord"], therapy, tracking_number="CC-2", temperature_min_c=9)
    assert inverted.status_code == 422
    twice = new_shipment(api, world["coord"], therapy)
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "shipment_exists"
    assert new_shipment(api, world["coordb"], therapy, tracking_number="CC-3").status_code == 404

    assert count(app, ShipmentPosition) == 0 and count(app, ConditionReading) == 0
    assert count(app, Shipment) == 1


def test_positions_are_idempotent_under_a_key(app, api, world):
    from server.store.models import ShipmentPosition

    therapy = start(api, world)
    shipment = created(api, world["coord"], therapy)
    headers = {"Idempotency-Key": "pos-1"}
    path = f"/api/v1/shipments/{shipment['id']}/positions"
    first = api.as_(world["logistics"]).post(path, json={"latitude": 1, "longitude": 2}, headers=headers)
    again = api.as_(world["logistics"]).post(path, json={"latitude": 1, "longitude": 2}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json() and count(app, ShipmentPosition) == 1


def _courier_world(app):
    """A courier site COURIER-1 with its logistics user, for a therapy that names it as its logistics party."""
    from server.access import accounts

    with app.app_context():
        accounts.add_site("COURIER-1", "Courier One", "logistics", "test")
        accounts.add_user("courier", ["logistics"], ["COURIER-1"], "Courier Person", PASSWORD, "test")
        return accounts.issue_token("courier", "test", "test")


def test_an_arrival_expected_after_the_window_raises_a_high_alert_when_the_estimate_changes(app, api, world, clock):
    courier_token = _courier_world(app)
    answer = api.as_(world["coord"]).post(
        "/api/v1/therapies",
        json={
            "process_key": "mini_therapy",
            "site": "SITE-A",
            "patient": {"reference": "PT-LATE"},
            "parties": {"logistics": "COURIER-1"},
        },
    )
    assert answer.status_code == 201, answer.get_json()
    therapy = answer.get_json()
    window_closes = clock() + timedelta(hours=24)  # 'Enrolment overdue', 24 h on 'Enrol patient'
    shipment = created(
        api, courier_token, therapy, from_party="SITE-A", expected_arrival=z(clock() + timedelta(hours=20))
    )
    assert shipment["from_party"] == "SITE-A" and late_alerts(api, world["coord"], therapy) == []

    clock.advance(hours=3)
    path = f"/api/v1/shipments/{shipment['id']}"
    later = window_closes + timedelta(hours=6, minutes=30)
    changed = api.as_(courier_token).patch(path, json={"expected_arrival": z(later)})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["late"] is True and changed.get_json()["late_by_minutes"] == 390
    coordinator_alerts = late_alerts(api, world["coord"], therapy)
    courier_alerts = late_alerts(api, courier_token, therapy)
    assert len(coordinator_alerts) == len(courier_alerts) == 1
    alert = coordinator_alerts[0]
    assert alert["severity"] == "high" and alert["role"] == "coordinator" and courier_alerts[0]["role"] == "logistics"
    assert "6 h 30 min after the window" in alert["message"] and "Ask the courier" in alert["message"]
    assert alert["data"]["shipment_id"] == shipment["id"] and alert["data"]["window_due_at"] == z(window_closes)
    assert alert["activity_id"] == "Task_Enrol"
    # The warning comes before the window: the timer has not fired.
    timers = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["waiting_for"]
    assert [w["activity_id"] for w in timers if w["type"] == "timer"] == ["Timer_EnrolLate"]

    # The same estimate again (as a PATCH or with a position) raises nothing more.
    assert api.as_(courier_token).patch(path, json={"expected_arrival": z(later)}).status_code == 200
    moved = api.as_(courier_token).post(
        f"{path}/positions", json={"latitude": 50.1, "longitude": 8.6, "expected_arrival": z(later)}
    )
    assert moved.status_code == 201
    assert len(late_alerts(api, world["coord"], therapy)) == 1
    # Acknowledged as any alert; a later estimate is a new warning.
    acknowledged = api.as_(world["coord"]).post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "rerouted"})
    assert acknowledged.status_code == 200
    clock.advance(hours=1)
    even_later = later + timedelta(hours=2)
    moved = api.as_(courier_token).post(
        f"{path}/positions", json={"latitude": 50.2, "longitude": 8.7, "expected_arrival": z(even_later)}
    )
    assert moved.status_code == 201 and moved.get_json()["shipment"]["late_by_minutes"] == 510
    assert [a["data"]["expected_arrival"] for a in late_alerts(api, world["coord"], therapy)] == [
        z(even_later),
        z(later),
    ]
    # Back within the window: no warning, and the shipment is no longer late.
    back = api.as_(courier_token).patch(path, json={"expected_arrival": z(window_closes - timedelta(hours=1))})
    assert back.get_json()["late"] is False and len(late_alerts(api, world["coord"], therapy)) == 2
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    assert [e["action"] for e in audit["items"]].count("shipment.eta_changed") == 3


def test_the_bundled_fresh_shipment_is_warned_about_before_its_24_hour_window_runs_out(app, api, world, clock):
    """In the bundled autologous diagram the window is the 24-hour delivery timer of the fresh material: a
    courier's estimate past it raises the alert hours before the escalation would."""
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    from ..scenario_data import form_data
    from ..support.journeys import complete, deliver, fire, tasks_of

    with app.app_context():
        deploy_bundled(project_root() / "processes")
    therapy = start_therapy(api, world["coord"], "autologous_car_t")
    for activity_id in ("Task_Enrolment", "Task_Scheduling", "Task_Apheresis"):
        [task] = tasks_of(api, world["coord"], therapy["id"])
        assert task["activity_id"] == activity_id
        done = complete(api, world["coord"], task["id"], form_data(task["form"]["name"], therapy["coi"]))
        assert done.status_code == 200, done.get_json()
    deliver(api, world, therapy, "courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"})
    picked_up = clock()
    shipment = created(api, world["integrator"], therapy, from_party="apheresis", to_party="MFG-1")
    assert shipment["window"]["activity_id"] == "Event_FreshDeliveryOverdue"
    assert shipment["window"]["due_at"] == z(picked_up + timedelta(hours=24))
    assert "Not delivered within 24 h" in shipment["window"]["label"]

    clock.advance(hours=2)
    estimate = picked_up + timedelta(hours=27)
    moved = api.as_(world["logistics"]).post(
        f"/api/v1/shipments/{shipment['id']}/positions",
        json={"latitude": 49.0, "longitude": 10.0, "note": "road closed", "expected_arrival": z(estimate)},
    )
    assert moved.status_code == 201 and moved.get_json()["shipment"]["late_by_minutes"] == 180
    [alert] = late_alerts(api, world["logistics"], therapy)
    assert alert["activity_id"] == "Task_AwaitFreshDelivery" and alert["severity"] == "high"
    assert "3 h after the window" in alert["message"]
    assert fire(app, therapy["id"]) is False, "the escalation is still 22 hours away"


def test_no_window_no_warning(api, world, clock):
    """A therapy that waits for a message alone (no timer) has no window to miss."""
    therapy = start(api, world)
    to_receipt(api, world, therapy)  # now at 'Receive shipment': no timer runs
    shipment = created(api, world["coord"], therapy, expected_arrival=z(clock() + timedelta(days=30)))
    assert shipment["window"] is None and shipment["late"] is False
    assert late_alerts(api, world["coord"], therapy) == []


# -- the courier's messages, over POST /messages (the broker takes them the same way) ----------------------------
def test_tracking_messages_reach_the_shipment_not_the_engine(app, api, world, clock):
    from server.store.models import ShipmentPosition

    therapy = start(api, world)
    to_receipt(api, world, therapy)  # 'Receive shipment' holds 2..8 °C
    shipment = created(api, world["coord"], therapy)
    integrator = api.as_(world["integrator"])

    def send(name, payload, **extra):
        return integrator.post("/api/v1/messages", json={"name": name, "payload": payload, **extra})

    position = send("shipment.position", {"shipment_id": shipment["id"], "latitude": 52.5, "longitude": 13.4})
    assert position.status_code == 200, position.get_json()
    assert position.get_json()["delivered"] is True and position.get_json()["shipment_id"] == shipment["id"]
    assert position.get_json()["position"]["recorded_by"] == "integrator"
    eta = z(clock() + timedelta(hours=5))
    assert send("shipment.eta", {"shipment_id": shipment["id"], "expected_arrival": eta}).status_code == 200
    readings = send(
        "shipment.readings",
        {"shipment_id": shipment["id"], "readings": [{"recorded_at": z(clock()), "temperature_c": 12.5}]},
        therapy_id=therapy["id"],
    )
    assert readings.status_code == 200, readings.get_json()
    assert readings.get_json()["readings"]["excursion"] is True  # detected as any reading is
    alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    assert [a["kind"] for a in alerts if a["kind"] != "notification"] == ["condition_excursion"]
    detail = api.as_(world["coord"]).get(f"/api/v1/shipments/{shipment['id']}").get_json()
    assert detail["expected_arrival"] == eta and len(detail["positions"]) == 1 and len(detail["readings"]) == 1

    unknown = send("shipment.position", {"shipment_id": "nope", "latitude": 1, "longitude": 1})
    assert unknown.status_code == 404
    bad = send("shipment.position", {"shipment_id": shipment["id"], "latitude": 91, "longitude": 1})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_payload"
    assert "latitude" in bad.get_json()["error"]["details"]["fields"]["payload"]
    other = start(api, world, reference="PT-2")
    mismatched = send(
        "shipment.position", {"shipment_id": shipment["id"], "latitude": 1, "longitude": 1}, therapy_id=other["id"]
    )
    assert mismatched.status_code == 404
    assert count(app, ShipmentPosition) == 1
    # Without a shipment_id it is an ordinary message for the engine (which does not wait for it).
    plain = send("shipment.position", {"latitude": 1, "longitude": 1}, therapy_id=therapy["id"])
    assert plain.status_code == 409 and plain.get_json()["error"]["code"] == "not_waiting"


# -- the therapy page --------------------------------------------------------------------------------------------
def _page(app, username, therapy_id):
    client = app.test_client()
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf(client)})
    page = client.get(f"/therapies/{therapy_id}")
    assert page.status_code == 200
    return page.get_data(as_text=True)


@pytest.mark.parametrize("installed", [True, False])
def test_the_therapy_page_shows_its_shipments(app, api, world, clock, installed, tmp_path):
    therapy = start(api, world)
    empty = _page(app, "coord", therapy["id"])
    assert 'data-testid="shipments"' in empty and "No shipments recorded." in empty
    late = clock() + timedelta(hours=30)
    shipment = created(api, world["coord"], therapy, expected_arrival=z(late))
    for lat, lng in ((48.1, 11.5), (48.7, 9.1)):
        api.as_(world["logistics"]).post(
            f"/api/v1/shipments/{shipment['id']}/positions", json={"latitude": lat, "longitude": lng}
        )
    api.as_(world["logistics"]).post(
        f"/api/v1/shipments/{shipment['id']}/readings",
        json={"readings": [{"recorded_at": z(clock()), "temperature_c": 4.5}]},
    )
    if not installed:
        app.config["NODE_MODULES"] = str(tmp_path)  # no node_modules: the page still renders
    html = _page(app, "coord", therapy["id"])
    assert "ColdChain" in html and "CC-1001" in html and "SITE-A" in html and "MFG-1" in html
    assert 'data-testid="shipment-late"' in html and "late by 6 h 0 min" in html
    assert html.count('class="tl-shipment-position"') == 2 and "4.5 °C" in html
    assert "data-shipment-map" in html and "48.1" in html
    if installed:
        assert "/vendor/leaflet/leaflet.js" in html and "shipment-map.js" in html
        assert 'data-testid="map-unavailable"' not in html
    else:
        assert "/vendor/leaflet/" not in html and 'data-testid="map-unavailable"' in html
    assert _page(app, "mfg", therapy["id"]).count("CC-1001") >= 1  # the manufacturing party sees it too


def test_the_answers_match_the_openapi_document(api, world, clock):
    from .test_openapi import Checked

    document = api.get("/api/v1/openapi.json").get_json()
    call = Checked(api, document)
    therapy = start(api, world)
    body = {"carrier": "ColdChain", "tracking_number": "CC-9", "from_party": "SITE-A", "to_party": "MFG-1"}
    shipment = call("POST", f"/api/v1/therapies/{therapy['id']}/shipments", world["coord"], json=body).get_json()
    path = f"/api/v1/shipments/{shipment['id']}"
    assert (
        call("POST", f"{path}/positions", world["logistics"], json={"latitude": 1, "longitude": 2}).status_code == 201
    )
    readings = {"readings": [{"recorded_at": z(clock()), "temperature_c": 30}]}
    assert call("POST", f"{path}/readings", world["logistics"], json=readings).status_code == 201
    eta = {"expected_arrival": z(clock() + timedelta(days=3))}
    assert call("PATCH", path, world["coord"], json=eta).get_json()["late"] is True
    assert call("GET", path, world["coord"]).status_code == 200
    assert call("GET", f"/api/v1/therapies/{therapy['id']}/shipments", world["coord"]).status_code == 200
    assert call("GET", "/api/v1/shipments/unknown", world["coord"]).status_code == 404


def test_a_reading_outside_the_shipments_own_range_is_an_excursion_even_where_the_process_states_none(
    api, world, clock
):
    therapy = start(api, world)  # waiting at enrolment, where the mini process states no range
    courier = api.as_(world["logistics"])
    chilled = created(api, world["coord"], therapy, temperature_min_c=2, temperature_max_c=6)
    cryo = created(
        api, world["coord"], therapy, tracking_number="LN2-7", temperature_min_c=None, temperature_max_c=-150
    )

    def read(shipment, temperature):
        answer = courier.post(
            f"/api/v1/shipments/{shipment['id']}/readings",
            json={"readings": [{"recorded_at": z(clock()), "temperature_c": temperature}]},
        )
        assert answer.status_code == 201, answer.get_json()
        return answer.get_json()

    assert read(chilled, 5.0)["excursion"] is False and read(cryo, -160.0)["excursion"] is False
    warm = read(chilled, 7.0)
    assert warm["excursion"] is True
    assert read(cryo, -140.0)["alert_id"] != warm["alert_id"], "another container, another alert"
    assert read(chilled, 7.5)["alert_id"] == warm["alert_id"], "the chilled box is already under its open alert"
    alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    messages = sorted(a["message"] for a in alerts if a["kind"] == "condition_excursion")
    assert messages == [
        "Temperature excursion: -140 °C is above the allowed at most -150 °C.",
        "Temperature excursion: 7 °C is above the allowed 2..6 °C.",
    ]


def at_once(app, count: int, request) -> list[int]:
    """Send ``request(client)`` from ``count`` threads at once, each with its own client; the status codes."""
    answers: list[int] = []

    def send():
        answers.append(request(app.test_client()).status_code)

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


def meeting(monkeypatch, module, name: str) -> None:
    """Make two concurrent calls of ``module.name`` wait for each other (2 s at most) before they run it."""
    meet, original = threading.Barrier(2, timeout=2), getattr(module, name)

    def side_by_side(*args, **kwargs):
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, side_by_side)


def test_two_couriers_sending_the_same_late_estimate_at_once_record_one_change_and_one_warning(
    app, api, world, clock, monkeypatch
):
    from server.custody import shipments

    therapy = start(api, world)
    window_closes = clock() + timedelta(hours=24)
    shipment = created(api, world["coord"], therapy, expected_arrival=z(clock() + timedelta(hours=20)))
    meeting(monkeypatch, shipments, "check_late")  # the first waits inside its transaction for the second
    late = z(window_closes + timedelta(hours=3))
    auth = {"Authorization": f"Bearer {world['logistics']}"}
    path = f"/api/v1/shipments/{shipment['id']}"
    assert at_once(app, 2, lambda c: c.patch(path, json={"expected_arrival": late}, headers=auth)) == [200, 200]
    assert len(late_alerts(api, world["coord"], therapy)) == 1
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    assert [e["action"] for e in audit["items"]].count("shipment.eta_changed") == 1, "the second found it unchanged"


def test_two_loggers_reporting_an_excursion_at_once_raise_one_alert(app, api, world, clock, monkeypatch):
    from server.custody import conditions

    therapy = start(api, world)
    to_receipt(api, world, therapy)  # 'Receive shipment' keeps the material at 2..8 °C
    meeting(monkeypatch, conditions, "_handle_excursion")  # both have stored their reading and look for an alert
    auth = {"Authorization": f"Bearer {world['logistics']}"}
    path = f"/api/v1/therapies/{therapy['id']}/conditions"
    sensors = iter(["LOGGER-1", "LOGGER-2"])

    def report(client):
        reading = {"sensor_id": next(sensors), "recorded_at": z(clock()), "temperature_c": 11.0}
        return client.post(path, json=reading, headers=auth)

    assert at_once(app, 2, report) == [201, 201]
    alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    assert [a["kind"] for a in alerts].count("condition_excursion") == 1
