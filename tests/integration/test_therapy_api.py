"""A therapy runs end to end through the REST API, every step in the audit trail."""

from __future__ import annotations

from ..support.journeys import ENROLMENT, complete, fire, only_task, post_therapy, start, tasks_of, therapy_request
from .conftest import PASSWORD


def test_therapy_runs_to_completion_through_the_api(api, world, clock):
    created = post_therapy(api, world["coord"])
    assert created.status_code == 201, created.get_json()
    therapy = created.get_json()
    assert therapy["status"] == "active" and therapy["process"] == {"key": "mini_therapy", "version": 1}
    assert len(therapy["coi"]) == 15 and therapy["coi"].startswith("CHW1234")
    assert therapy["site"] == "SITE-A" and therapy["stage"] == "Enrol patient"

    task = only_task(api, world["coord"], therapy["id"])
    assert task["role"] == "coordinator" and task["form"]["schema"]["title"] == "Enrol patient"
    assert task["instructions"] == "Confirm consent and eligibility."
    assert task["due_at"] is not None

    bad = complete(api, world["coord"], task["id"], {"eligible": "yes"})
    assert bad.status_code == 422
    assert set(bad.get_json()["error"]["details"]["fields"]) == {"eligible", "patient_initials"}

    done = complete(api, world["coord"], task["id"], ENROLMENT)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["task"]["status"] == "completed"
    assert done.get_json()["task"]["completed_by"] == "coord"

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["open_tasks"] == []
    assert detail["waiting_for"] == [
        {"type": "message", "activity_id": "Event_Delivered", "name": "shipment.delivered"}
    ]

    msg = api.as_(world["integrator"]).post(
        "/api/v1/messages",
        json={"name": "shipment.delivered", "coi": therapy["coi"], "payload": {"carrier": "ColdChain"}},
    )
    assert msg.status_code == 200, msg.get_json()
    assert msg.get_json()["activity_id"] == "Event_Delivered"

    receive = only_task(api, world["logistics"], therapy["id"])
    assert receive["signature"] == {"meaning": "approval"}
    unsigned = complete(api, world["logistics"], receive["id"], {"received_ok": True})
    assert unsigned.status_code == 422 and unsigned.get_json()["error"]["code"] == "signature_required"
    wrong = complete(
        api,
        world["logistics"],
        receive["id"],
        {"received_ok": True},
        signature={"password": "nope-nope-1", "meaning": "approval"},
    )
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "signature_failed"
    signed = complete(
        api,
        world["logistics"],
        receive["id"],
        {"received_ok": True},
        signature={"password": PASSWORD, "meaning": "approval"},
    )
    assert signed.status_code == 200, signed.get_json()

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    [timer] = detail["waiting_for"]
    assert timer["type"] == "timer" and timer["activity_id"] == "Timer_Wait"

    clock.advance(days=1, seconds=5)
    assert fire(api.client.application, therapy["id"]) is True
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "completed" and detail["stage"] == "Completed"

    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    actions = [e["action"] for e in audit["items"]]
    for expected in [
        "therapy.started",
        "task.ready",
        "task.completed",
        "service.called",
        "message.received",
        "signature.failed",
        "signature.applied",
        "timer.fired",
        "therapy.completed",
    ]:
        assert expected in actions, expected
    assert actions.index("therapy.started") < actions.index("message.received") < actions.index("therapy.completed")
    verify = api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()
    assert verify["ok"] is True and verify["checked"] >= len(actions)

    timeline = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/timeline").get_json()
    names = [i["name"] for i in timeline["items"] if i["action"] == "activity.completed"]
    assert names[:3] == ["Referral received", "Eligible?", "Tell logistics"]


def test_running_therapy_stays_on_its_version(api, world):
    from pathlib import Path

    first = start(api, world["coord"])
    mini = (Path(__file__).parent.parent / "fixtures" / "mini.bpmn").read_bytes()
    changed = mini.replace(b'name="Enrol patient"', b'name="Enrol the patient"')
    import io

    forms = [
        (io.BytesIO(p.read_bytes()), p.name)
        for p in sorted(Path(__file__).parent.parent.joinpath("fixtures").glob("*.json"))
    ]
    up = api.as_(world["designer"]).post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(changed), "mini.bpmn"), "forms": forms},
        content_type="multipart/form-data",
    )
    assert up.status_code == 201 and up.get_json()["version"] == 2
    second = start(api, world["coord"])
    assert first["process"]["version"] == 1 and second["process"]["version"] == 2
    assert only_task(api, world["coord"], first["id"])["name"] == "Enrol patient"
    assert only_task(api, world["coord"], second["id"])["name"] == "Enrol the patient"


def test_message_nobody_waits_for_is_refused_and_audited(api, world):
    therapy = start(api, world["coord"])
    refused = api.as_(world["integrator"]).post(
        "/api/v1/messages", json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {}}
    )
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_waiting"
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}").get_json()["items"]
    assert audit[-1]["action"] == "message.refused"
    assert only_task(api, world["coord"], therapy["id"])["activity_id"] == "Task_Enrol"


def test_completing_a_task_twice_gives_409(api, world):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    not_eligible = {"eligible": False, "patient_initials": "AB"}
    assert complete(api, world["coord"], task["id"], not_eligible).status_code == 200
    again = complete(api, world["coord"], task["id"], not_eligible)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "task_not_ready"


def test_wrong_role_gets_403_and_other_site_gets_404(api, world):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    not_eligible = {"eligible": False, "patient_initials": "AB"}
    forbidden = complete(api, world["logistics"], task["id"], not_eligible)
    assert forbidden.status_code == 403
    assert api.as_(world["coordb"]).get(f"/api/v1/therapies/{therapy['id']}").status_code == 404
    assert complete(api, world["coordb"], task["id"], not_eligible).status_code == 404
    assert api.as_(world["coordb"]).get("/api/v1/therapies").get_json()["items"] == []
    assert [t["id"] for t in api.as_(world["coord"]).get("/api/v1/therapies").get_json()["items"]] == [therapy["id"]]


def test_cancel_withdraws_tasks(api, world):
    therapy = start(api, world["coord"])
    assert api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/cancel", json={}).status_code == 422
    ok = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "patient withdrew consent"}
    )
    assert ok.status_code == 200 and ok.get_json()["status"] == "cancelled"
    assert tasks_of(api, world["coord"], therapy["id"]) == []


def test_idempotency_key_replays_the_first_answer(api, world):
    headers = {"Idempotency-Key": "start-PT-0001"}
    request = therapy_request(reference="PT-0001")
    first = api.as_(world["coord"]).post("/api/v1/therapies", headers=headers, json=request)
    again = api.as_(world["coord"]).post("/api/v1/therapies", headers=headers, json=request)
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(api.as_(world["coord"]).get("/api/v1/therapies").get_json()["items"]) == 1


def test_bad_input_gets_clear_errors_never_500(api, world):
    coord = api.as_(world["coord"])
    assert api.get("/api/v1/therapies").status_code == 401
    assert api.as_("tth_wrong").get("/api/v1/therapies").status_code == 401
    assert coord.post("/api/v1/therapies", data="{not json", content_type="application/json").status_code == 400
    assert coord.post("/api/v1/therapies", data="x", content_type="text/plain").status_code == 415
    unknown_site = post_therapy(api, world["coord"], site="NOPE")
    assert unknown_site.status_code == 422 and unknown_site.get_json()["error"]["details"]["field"] == "site"
    missing = coord.post("/api/v1/therapies", json={"site": "SITE-A"})
    assert missing.status_code == 422 and "process_key" in missing.get_json()["error"]["details"]["fields"]
    assert coord.get("/api/v1/therapies/nope").status_code == 404
    assert coord.get("/api/v1/therapies?status=weird").status_code == 400
    assert coord.get("/api/v1/therapies?limit=9999").status_code == 400
    assert coord.get("/api/v1/nowhere").get_json()["error"]["code"] == "not_found"
    assert coord.post("/api/v1/messages", json={"name": "x", "coi": "garbage"}).status_code == 422


def test_hostile_upload_is_422_and_changes_nothing(api, world):
    import io

    evil = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">&x;</bpmn:definitions>'
    )
    designer = api.as_(world["designer"])
    response = designer.post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(evil), "evil.bpmn")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422 and "root:" not in response.get_data(as_text=True)
    assert [d["key"] for d in designer.get("/api/v1/process-definitions").get_json()["items"]] == ["mini_therapy"]
    assert api.as_(world["coord"]).post("/api/v1/process-definitions").status_code == 403


def test_identical_upload_returns_the_existing_version(api, world):
    import io
    from pathlib import Path

    fixtures = Path(__file__).parent.parent / "fixtures"
    files = {
        "bpmn": (io.BytesIO((fixtures / "mini.bpmn").read_bytes()), "mini.bpmn"),
        "forms": [(io.BytesIO(p.read_bytes()), p.name) for p in sorted(fixtures.glob("*.json"))],
    }
    again = api.as_(world["designer"]).post(
        "/api/v1/process-definitions", data=files, content_type="multipart/form-data"
    )
    assert again.status_code == 200 and again.get_json()["version"] == 1
    xml = api.as_(world["designer"]).get("/api/v1/process-definitions/mini_therapy/versions/1/bpmn")
    assert xml.data == (fixtures / "mini.bpmn").read_bytes()


def test_health_and_openapi_need_no_token(api, world):
    health = api.get("/api/v1/health")
    assert health.status_code == 200 and health.get_json()["database"] == "ok"
    doc = api.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path in [
        "/api/v1/therapies",
        "/api/v1/tasks/{task_id}/complete",
        "/api/v1/messages",
        "/api/v1/audit/verify",
        "/api/v1/process-definitions",
    ]:
        assert path in doc["paths"], path


def test_concurrent_completion_of_one_task_exactly_one_succeeds(api, world):
    import threading

    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    body = {"data": {"eligible": False, "patient_initials": "AB"}}
    barrier, statuses = threading.Barrier(4), []

    def complete():
        client = api.client.application.test_client()
        barrier.wait()
        response = client.post(
            f"/api/v1/tasks/{task['id']}/complete", json=body, headers={"Authorization": f"Bearer {world['coord']}"}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=complete) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200, 409, 409, 409]
    entries = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    assert [e["action"] for e in entries["items"]].count("task.completed") == 1
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True
