"""Scan verification, the chain of custody and condition monitoring through the REST API."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from engine.coi import check_character

from ..support.journeys import complete, to_receipt
from ..support.journeys import start as start_therapy
from .conftest import PASSWORD


def start(api, world, reference="PT-0001"):
    """A mini therapy for patient ``reference``, started by SITE-A's coordinator."""
    return start_therapy(api, world["coord"], reference=reference)


def transfer(api, token, therapy, scanned, **extra):
    body = {
        "material_id": "BAG-1",
        "from_party": "SITE-A apheresis",
        "to_party": "ColdChain courier",
        "scanned_coi": scanned,
        "location": "SITE-A dock",
        **extra,
    }
    return api.as_(token).post(f"/api/v1/therapies/{therapy['id']}/custody", json=body)


def rows(app, model, **where):
    """Rows of ``model`` matching ``where`` (what the database holds)."""
    from server.store.extensions import db

    with app.app_context():
        query = select(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return list(db.session.execute(query).scalars())


def wrong_check(coi: str) -> str:
    right = check_character(coi)
    return f"{coi} {'A' if right != 'A' else 'B'}"


# -- chain of custody --------------------------------------------------------------------------------
def test_custody_accepts_every_form_of_the_label_and_lists_the_chain_in_order(api, world, clock):
    therapy = start(api, world)
    coi = therapy["coi"]
    forms = ["&/" + coi, coi, f"{coi} {check_character(coi)}", f"{coi}{check_character(coi)}", coi.lower()]
    recorded = []
    for index, scanned in enumerate(forms):
        occurred = datetime(2026, 11, 22, 8, 0, tzinfo=UTC) + timedelta(hours=len(forms) - index)
        response = transfer(
            api,
            world["logistics"],
            therapy,
            scanned,
            material_id=f"BAG-{index}",
            occurred_at=occurred.isoformat().replace("+00:00", "Z"),
        )
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        assert {"id", "therapy_id", "material_id", "from_party", "to_party", "occurred_at", "recorded_by"} <= set(body)
        assert body["therapy_id"] == therapy["id"] and body["recorded_by"] == "logistics"
        assert body["verified_coi"] == coi and body["location"] == "SITE-A dock"
        recorded.append(body)
    chain = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}/custody").get_json()
    assert [t["material_id"] for t in chain["items"]] == [f"BAG-{i}" for i in reversed(range(len(forms)))]
    assert [t["occurred_at"] for t in chain["items"]] == sorted(t["occurred_at"] for t in chain["items"])

    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    transferred = [e for e in audit["items"] if e["action"] == "custody.transferred"]
    assert [e["subject_id"] for e in transferred] == [t["id"] for t in recorded]
    assert transferred[0]["data"]["scanned_coi"] == "&/" + coi

    from server.store.models import OutboxEvent

    events = rows(api.client.application, OutboxEvent, type="custody.transferred")
    assert len(events) == len(forms) and events[0].data["coi"] == coi


def test_custody_defaults_its_time_and_is_append_only(api, world, clock):
    therapy = start(api, world)
    made = transfer(api, world["mfg"], therapy, "&/" + therapy["coi"])
    assert made.status_code == 201
    assert made.get_json()["occurred_at"] == "2026-11-23T09:00:00Z"
    url = f"/api/v1/therapies/{therapy['id']}/custody"
    for method in ("put", "patch", "delete"):
        response = getattr(api.client, method)(url, headers={"Authorization": f"Bearer {world['admin']}"})
        assert response.status_code == 405
    assert api.client.delete(
        f"{url}/{made.get_json()['id']}", headers={"Authorization": f"Bearer {world['admin']}"}
    ).status_code in (404, 405)
    assert len(api.as_(world["coord"]).get(url).get_json()["items"]) == 1


def test_custody_wrong_check_character_is_refused_and_changes_nothing(api, world, clock):
    therapy = start(api, world)
    refused = transfer(api, world["logistics"], therapy, wrong_check(therapy["coi"]))
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "coi_check_failed"
    garbled = transfer(api, world["logistics"], therapy, "&/NOT-A-COI")
    assert garbled.status_code == 422 and garbled.get_json()["error"]["code"] == "coi_invalid"
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/custody").get_json()["items"] == []
    from server.store.models import Alert

    assert rows(api.client.application, Alert, therapy_id=therapy["id"], kind="coi_mismatch") == []


def test_custody_with_another_therapys_label_is_blocked_alerted_and_audited(api, world, clock):
    therapy, other = start(api, world, "PT-0001"), start(api, world, "PT-0002")
    refused = transfer(api, world["logistics"], therapy, "&/" + other["coi"])
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "coi_mismatch"
    assert error["details"]["scanned_coi"] == other["coi"] and error["details"]["expected_coi"] == therapy["coi"]
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/custody").get_json()["items"] == []

    app = api.client.application
    from server.store.models import Alert, OutboxEvent

    [alert] = rows(app, Alert, therapy_id=therapy["id"], kind="coi_mismatch")
    assert alert.kind == "coi_mismatch" and alert.severity == "high" and alert.id == error["details"]["alert_id"]
    [event] = rows(app, OutboxEvent, type="coi.mismatch")
    assert event.therapy_id == therapy["id"] and event.data["scanned"] == "&/" + other["coi"]
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    [mismatch] = [e for e in audit["items"] if e["action"] == "coi.mismatch"]
    assert mismatch["actor"] == "logistics" and mismatch["data"]["scanned"] == "&/" + other["coi"]
    assert mismatch["data"]["where"] == "custody_transfer" and mismatch["data"]["material_id"] == "BAG-1"
    assert "custody.transferred" not in [e["action"] for e in audit["items"]]
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def test_custody_roles_and_sites(api, world, clock):
    therapy = start(api, world)
    scanned = "&/" + therapy["coi"]
    assert transfer(api, world["qa"], therapy, scanned).status_code == 403
    assert transfer(api, world["auditor"], therapy, scanned).status_code == 403
    assert transfer(api, world["coordb"], therapy, scanned).status_code == 404
    assert api.as_(world["coordb"]).get(f"/api/v1/therapies/{therapy['id']}/custody").status_code == 404
    for user in ("logistics", "mfg", "coord", "integrator"):
        assert transfer(api, world[user], therapy, scanned).status_code == 201, user
    bad = transfer(api, world["logistics"], therapy, scanned, to_party="")
    assert bad.status_code == 422 and "to_party" in bad.get_json()["error"]["details"]["fields"]
    future = transfer(api, world["logistics"], therapy, scanned, occurred_at="2027-01-01T00:00:00Z")
    assert future.status_code == 422


def test_custody_replay_with_idempotency_key_records_once(api, world, clock):
    therapy = start(api, world)
    headers = {"Idempotency-Key": "handoff-1"}
    first = api.as_(world["logistics"]).post(
        f"/api/v1/therapies/{therapy['id']}/custody",
        headers=headers,
        json={"material_id": "BAG-1", "from_party": "A", "to_party": "B", "scanned_coi": therapy["coi"]},
    )
    again = api.as_(world["logistics"]).post(
        f"/api/v1/therapies/{therapy['id']}/custody",
        headers=headers,
        json={"material_id": "BAG-1", "from_party": "A", "to_party": "B", "scanned_coi": therapy["coi"]},
    )
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json()["id"] == first.get_json()["id"]
    assert len(api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/custody").get_json()["items"]) == 1


# -- scans in task forms -----------------------------------------------------------------------------
def test_task_scan_of_the_wrong_bag_blocks_the_step_before_any_signature(api, world, clock):
    therapy, other = start(api, world, "PT-0001"), start(api, world, "PT-0002")
    task = to_receipt(api, world, therapy)

    def receive(scanned: str, password: str):
        """Logistics completes 'Receive shipment', signed, with the label scanned on the bag."""
        data = {"received_ok": True, "scanned_coi": scanned}
        return complete(
            api, world["logistics"], task["id"], data, signature={"password": password, "meaning": "approval"}
        )

    wrong_bag = receive("&/" + other["coi"], "not-the-password-1")
    assert wrong_bag.status_code == 409 and wrong_bag.get_json()["error"]["code"] == "coi_mismatch"
    typo = receive(wrong_check(therapy["coi"]), PASSWORD)
    assert typo.status_code == 422 and typo.get_json()["error"]["code"] == "coi_check_failed"
    assert api.as_(world["logistics"]).get(f"/api/v1/tasks/{task['id']}").get_json()["status"] == "ready"

    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    actions = [e["action"] for e in audit["items"]]
    assert "signature.failed" not in actions and "signature.applied" not in actions
    [mismatch] = [e for e in audit["items"] if e["action"] == "coi.mismatch"]
    assert mismatch["data"]["task_id"] == task["id"] and mismatch["data"]["activity_id"] == "Task_Receive"
    from server.store.models import Alert

    [alert] = rows(api.client.application, Alert, therapy_id=therapy["id"], kind="coi_mismatch")
    assert alert.kind == "coi_mismatch" and alert.severity == "high"

    right = receive(f"{therapy['coi']} {check_character(therapy['coi'])}", PASSWORD)
    assert right.status_code == 200, right.get_json()


# -- condition monitoring ----------------------------------------------------------------------------
def reading(temperature, at="2026-11-23T08:30:00Z", **extra):
    return {"sensor_id": "LOGGER-7", "temperature_c": temperature, "recorded_at": at, **extra}


def test_readings_are_checked_against_the_range_of_the_current_activity(api, world, clock):
    therapy = start(api, world)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    unknown = api.as_(world["logistics"]).post(url, json=reading(30.0))
    assert unknown.status_code == 201 and unknown.get_json()["excursion"] is False
    assert unknown.get_json()["range"] is None

    to_receipt(api, world, therapy)
    inside = api.as_(world["integrator"]).post(url, json=reading(5.0, shipment_id="SHP-1", location="dock"))
    assert inside.status_code == 201
    assert inside.get_json()["excursion"] is False and inside.get_json()["range"] == [2.0, 8.0]
    assert "alert_id" not in inside.get_json()
    assert api.as_(world["logistics"]).post(url, json=reading(8.0)).get_json()["excursion"] is False

    warm = api.as_(world["logistics"]).post(url, json=reading(12.5, at="2026-11-23T08:45:00Z"))
    assert warm.status_code == 201
    body = warm.get_json()
    assert body["excursion"] is True and body["alert_id"] and body["activity_id"] == "Task_Receive"

    app = api.client.application
    from server.store.models import Alert, OutboxEvent

    [alert] = rows(app, Alert, therapy_id=therapy["id"], kind="condition_excursion")
    assert alert.id == body["alert_id"] and alert.severity == "high" and alert.kind == "condition_excursion"
    assert "12.5" in alert.message
    [event] = rows(app, OutboxEvent, type="condition.excursion")
    assert event.data["temperature_c"] == 12.5 and event.data["range"] == [2.0, 8.0]
    # Still warm under the same open alert: stored and flagged, no second alert.
    again = api.as_(world["logistics"]).post(url, json=reading(13.0, at="2026-11-23T08:46:00Z")).get_json()
    assert again["excursion"] is True and again["alert_id"] == body["alert_id"]
    assert len(rows(app, Alert, therapy_id=therapy["id"], kind="condition_excursion")) == 1

    series = api.as_(world["coord"]).get(url).get_json()
    assert [r["temperature_c"] for r in series["items"]] == [30.0, 5.0, 8.0, 12.5, 13.0]
    assert [r["excursion"] for r in series["items"]] == [False, False, False, True, True]


def test_bad_readings_are_refused_and_nothing_is_stored(api, world, clock):
    therapy = start(api, world)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    for bad in (
        reading("warm"),
        reading(-300.0),
        reading(4.0, at="yesterday"),
        {"temperature_c": 4.0},
        reading(4.0, at="2026-11-24T09:00:00Z"),
        {"readings": []},
        {"readings": [reading(4.0)] * 1001},
        {"readings": [reading(4.0), reading(None)]},
    ):
        response = api.as_(world["logistics"]).post(url, json=bad)
        assert response.status_code == 422, (bad if len(str(bad)) < 200 else "batch", response.get_json())
    assert api.as_(world["logistics"]).post(url, data="nope", content_type="application/json").status_code == 400
    assert api.as_(world["coord"]).post(url, json=reading(4.0)).status_code == 403
    assert api.as_(world["logistics"]).get(url).get_json()["items"] == []


def test_conditions_of_another_sites_therapy_are_not_found(api, world, clock):
    from server.access import accounts

    with api.client.application.app_context():
        accounts.add_user("logistics-b", ["logistics"], ["SITE-B"], "Logistics B", PASSWORD, "test")
        token = accounts.issue_token("logistics-b", "test", "test")
    therapy = start(api, world)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    assert api.as_(token).post(url, json=reading(4.0)).status_code == 404
    assert api.as_(token).get(url).status_code == 404


def test_ten_thousand_readings_insert_in_bulk_and_read_back_as_a_series(api, world, clock, capsys):
    therapy = start(api, world)
    to_receipt(api, world, therapy)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    first = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    logger = api.as_(world["integrator"])
    began = time.perf_counter()
    for batch in range(10):
        readings = [
            reading(4.0 + (i % 7) * 0.5, at=(first + timedelta(minutes=batch * 1000 + i)).isoformat())
            for i in range(1000)
        ]
        response = logger.post(url, json={"readings": readings})
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["recorded"] == 1000 and response.get_json()["excursion"] is False
    insert_seconds = time.perf_counter() - began
    assert insert_seconds < 60

    began = time.perf_counter()
    window = logger.get(f"{url}?from=2026-11-20T00:00:00Z&to=2026-11-20T01:00:00Z&limit=500").get_json()
    window_ms = (time.perf_counter() - began) * 1000
    assert len(window["items"]) == 60 and window["next_cursor"] is None
    assert window["items"][0]["recorded_at"] == "2026-11-20T00:00:00Z"

    pages, cursor, seen = 0, None, 0
    while True:
        page = logger.get(f"{url}?limit=500" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen, pages, cursor = seen + len(page["items"]), pages + 1, page["next_cursor"]
        if cursor is None:
            break
    assert seen == 10_000 and pages == 20

    began = time.perf_counter()
    chart = logger.get(f"{url}?points=200").get_json()
    chart_ms = (time.perf_counter() - began) * 1000
    assert chart["downsampled"] is True and len(chart["items"]) == 200
    assert sum(b["count"] for b in chart["items"]) == 10_000
    assert min(b["min_c"] for b in chart["items"]) == 4.0 and max(b["max_c"] for b in chart["items"]) == 7.0
    assert logger.get(f"{url}?points=0").status_code == 400
    assert logger.get(f"{url}?limit=501").status_code == 400
    assert logger.get(f"{url}?from=soon").status_code == 400

    with capsys.disabled():
        print(
            f"\n[{api.client.application.config['DATABASE_URL'].split(':')[0]}] 10,000 readings in 10 batches: "
            f"{insert_seconds:.2f} s; 1-hour window: {window_ms:.1f} ms; 200-point chart: {chart_ms:.1f} ms"
        )


def test_series_query_uses_the_therapy_time_index(api, world, clock):
    from server.custody import conditions
    from server.store.extensions import db
    from server.store.models import ConditionReading

    app = api.client.application
    therapy = start(api, world)
    with app.app_context():
        first = datetime(2026, 11, 1, tzinfo=UTC)
        db.session.execute(
            insert(ConditionReading),
            [
                {
                    "therapy_id": therapy["id"],
                    "sensor_id": "S",
                    "recorded_at": first + timedelta(minutes=i),
                    "temperature_c": 4.0,
                    "excursion": False,
                }
                for i in range(5000)
            ],
        )
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE condition_reading"))
        query = conditions.series_query(
            therapy["id"], datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 2, 1, tzinfo=UTC)
        ).limit(501)
        compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if db.engine.dialect.name == "sqlite" else "EXPLAIN "
        plan = " ".join(str(row) for row in db.session.execute(text(prefix + str(compiled))))
    assert "ix_reading_therapy_time" in plan, plan


@pytest.mark.parametrize("points", [1, 7])
def test_downsampling_covers_the_window(api, world, clock, points):
    therapy = start(api, world)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    base = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    readings = [reading(float(i), at=(base + timedelta(minutes=i)).isoformat()) for i in range(10)]
    assert api.as_(world["logistics"]).post(url, json={"readings": readings}).status_code == 201
    chart = api.as_(world["coord"]).get(f"{url}?points={points}").get_json()
    assert sum(b["count"] for b in chart["items"]) == 10 and len(chart["items"]) <= points
    assert chart["items"][0]["min_c"] == 0.0 and chart["items"][-1]["max_c"] == 9.0
