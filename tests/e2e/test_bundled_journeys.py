"""The bundled diagrams, deployed as ``tether serve`` deploys them, run end to end through the REST API, each
task taken by the user of its party's site."""

from __future__ import annotations

from server.demo_data import with_slots

from ..integration.conftest import PASSWORD
from ..scenario_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, form_data
from ..support.journeys import MANUFACTURING_WINDOW, free_chain

# Who takes a task of a role at a site: the world's users (tests/integration/conftest.py) and the network's
# (tests/e2e/conftest.py); qa is not scoped to sites.
ACTING = {
    ("coordinator", "SITE-A"): "coord",
    ("coordinator", "APH-1"): "apheresis",
    ("manufacturing", "MFG-1"): "mfg",
    ("manufacturing", "MFG-2"): "mfg2",
    ("qa", "MFG-1"): "qa",
    ("qa", "MFG-2"): "qa",
}
# The parties of a journey's therapy beside SITE-A's treatment: MFG-1 manufactures (the world has it).
WORLD_PARTIES = {"manufacturing": "MFG-1"}
# The whole network of the ``network`` fixture: collected at APH-1, made at MFG-2, shipped by COURIER-1.
NETWORK_PARTIES = {"apheresis": "APH-1", "manufacturing": "MFG-2", "logistics": "COURIER-1"}


def run_journey(api, world, clock, process_key, journey, parties=None):
    """Start a therapy of ``process_key`` at SITE-A with ``parties`` (``WORLD_PARTIES`` unless given) and take
    the ``journey``'s steps (``take_steps``). The scheduling task books an apheresis and a manufacturing slot at
    the therapy's sites (opened by the admin first). Returns the therapy as its coordinator then sees it."""
    coord = api.as_(world["coord"])
    parties = WORLD_PARTIES if parties is None else parties
    if any(step[:2] == ("task", "Task_Scheduling") for step in journey):
        slots = free_chain(api, world["admin"], parties.get("apheresis", "SITE-A"), parties["manufacturing"])
        journey = with_slots(journey, *slots)
    started = coord.post(
        "/api/v1/therapies",
        json={
            "process_key": process_key,
            "site": "SITE-A",
            "patient": {"reference": "PT-42"},
            "parties": parties,
        },
    )
    assert started.status_code == 201, started.get_json()
    return take_steps(api, world, clock, started.get_json(), journey)


def signing_meaning(task: dict, data: dict) -> str:
    """The meaning a signature of ``task`` with ``data`` must carry: the one its decision field's value selects
    when the task declares a meaning per value, else its one meaning."""
    signature = task["signature"]
    if signature.get("field") and signature["field"] in data:
        return signature["meanings"][str(data[signature["field"]])]
    return signature["meaning"]


def take_steps(api, world, clock, therapy: dict, journey: list) -> dict:
    """Take the ``journey``'s steps in ``therapy``: each task as the user of its role at its site, each message
    as the integrator, each clock move with the timers it makes due. Returns the therapy as its coordinator
    then sees it."""
    coord = api.as_(world["coord"])
    for step in journey:
        if step[0] == "task":
            ready = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()["open_tasks"]
            task = next((t for t in ready if t["activity_id"] == step[1]), None)
            assert task is not None, f"{step[1]} not ready; open: {[t['activity_id'] for t in ready]}"
            body = {"data": {**form_data(task["form"]["name"], therapy["coi"]), **(step[2] if len(step) > 2 else {})}}
            if task["signature"]:
                body["signature"] = {"password": PASSWORD, "meaning": signing_meaning(task, body["data"])}
            user = ACTING[task["role"], task["site"]]
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


def completed_by(api, world, therapy_id) -> dict[str, str]:
    """Who completed each of the therapy's tasks, by activity id."""
    return {
        e["data"]["activity_id"]: e["actor"]
        for e in audit_actions(api, world, therapy_id)
        if e["action"] == "task.completed"
    }


def test_autologous_journey_through_the_api(api, network, clock, bundled):
    assert bundled["autologous_car_t"] == 1
    final = run_journey(api, network, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH, NETWORK_PARTIES)
    assert final["status"] == "completed", final
    assert final["data"]["coi_assignment"]["coi"] == final["coi"]
    booked = api.as_(network["coord"]).get(f"/api/v1/therapies/{final['id']}/bookings").get_json()["items"]
    assert {(b["kind"], b["site"], b["status"]) for b in booked} == {
        ("apheresis", "APH-1", "booked"),
        ("manufacturing", "MFG-2", "booked"),
    }
    assert final["data"]["bookings"]["manufacturing"]["start"] == MANUFACTURING_WINDOW[0]
    actions = [e["action"] for e in audit_actions(api, network, final["id"])]
    assert actions.count("task.completed") == sum(1 for step in AUTOLOGOUS_HAPPY_PATH if step[0] == "task")
    assert "signature.applied" in actions and "notification.sent" in actions
    assert actions.count("booking.created") == 2
    by = completed_by(api, network, final["id"])
    assert (by["Task_Enrolment"], by["Task_Apheresis"], by["Task_ReceiveAtManufacturing"], by["Task_QaRelease"]) == (
        "coord",
        "apheresis",
        "mfg2",
        "qa",
    )
    assert set(by.values()) == {"coord", "apheresis", "mfg2", "qa"}
    assert api.as_(network["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def test_allogeneic_journey_through_the_api(api, network, clock, bundled):
    final = run_journey(api, network, clock, "allogeneic", ALLOGENEIC_HAPPY_PATH, NETWORK_PARTIES)
    assert final["status"] == "completed", final
    assert completed_by(api, network, final["id"])["Task_AllocateLot"] == "mfg2"
