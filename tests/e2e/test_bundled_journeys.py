"""The bundled diagrams, deployed as ``tether serve`` deploys them, run end to end through the REST API."""

from __future__ import annotations

from ..integration.conftest import PASSWORD
from ..scenario_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, form_data

ROLE_USER = {"coordinator": "coord", "manufacturing": "mfg", "qa": "qa", "logistics": "logistics"}


def run_journey(api, world, clock, process_key, journey):
    coord = api.as_(world["coord"])
    started = coord.post(
        "/api/v1/therapies", json={"process_key": process_key, "site": "SITE-A", "patient": {"reference": "PT-42"}}
    )
    assert started.status_code == 201, started.get_json()
    therapy = started.get_json()
    for step in journey:
        if step[0] == "task":
            ready = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()["open_tasks"]
            task = next((t for t in ready if t["activity_id"] == step[1]), None)
            assert task is not None, f"{step[1]} not ready; open: {[t['activity_id'] for t in ready]}"
            body = {"data": {**form_data(task["form"]["name"], therapy["coi"]), **(step[2] if len(step) > 2 else {})}}
            if task["signature"]:
                body["signature"] = {"password": PASSWORD, "meaning": task["signature"]["meaning"]}
            user = ROLE_USER[task["role"]]
            done = api.as_(world[user]).post(f"/api/v1/tasks/{task['id']}/complete", json=body)
            assert done.status_code == 200, (step, done.get_json())
        elif step[0] == "message":
            sent = api.as_(world["integrator"]).post(
                "/api/v1/messages", json={"name": step[1], "coi": therapy["coi"], "payload": step[2]}
            )
            assert sent.status_code == 200, (step, sent.get_json())
        elif step[0] == "advance":
            from server.workflow.therapies import fire_due_timers

            clock.advance(**step[1])
            with api.client.application.app_context():
                assert fire_due_timers(therapy["id"])
    return coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()


def audit_actions(api, world, therapy_id):
    """The audit entries of one therapy, in order."""
    return api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy_id}&limit=500").get_json()["items"]


def test_autologous_journey_through_the_api(api, world, clock, bundled):
    assert bundled["autologous_car_t"] == 1
    final = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH)
    assert final["status"] == "completed", final
    assert final["data"]["coi_assignment"]["coi"] == final["coi"]
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={final['id']}&limit=500").get_json()
    actions = [e["action"] for e in audit["items"]]
    assert actions.count("task.completed") == sum(1 for step in AUTOLOGOUS_HAPPY_PATH if step[0] == "task")
    assert "signature.applied" in actions and "notification.sent" in actions
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def test_allogeneic_journey_through_the_api(api, world, clock, bundled):
    final = run_journey(api, world, clock, "allogeneic", ALLOGENEIC_HAPPY_PATH)
    assert final["status"] == "completed", final
