"""Trying a draft or a deployed version on a simulated clock through the API: one run with its path, events,
alerts and vein-to-vein time, a batch with its spread and escalation counts, nothing stored, and bad options
refused with 422 naming the field."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.store.extensions import db
from server.store.models import Alert, AuditEntry, OutboxEvent, TaskRecord, Therapy

DRAFTS = "/api/v1/process-drafts"
ENROL = {"Task_Enrol": {"eligible": True, "patient_initials": "AB"}, "Task_Receive": {"received_ok": True}}


def _draft(api, world, key: str = "mini_therapy") -> dict:
    response = api.as_(world["designer"]).post(DRAFTS, json={"key": key})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _counts() -> dict[str, int]:
    return {
        model.__name__: db.session.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (Therapy, TaskRecord, Alert, AuditEntry, OutboxEvent)
    }


def test_one_run_shows_the_path_the_escalations_and_the_end_and_stores_nothing(app, api, world):
    draft = _draft(api, world)
    with app.app_context():
        before = _counts()
    body = {"durations": {"Task_Enrol": [30, 30]}, "data": ENROL}
    response = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/simulate", json=body)
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    assert run["key"] == "mini_therapy" and run["status"] == "completed"
    assert run["end"] == {"activity_id": "End_Done", "name": "Therapy completed"}
    steps = [step["activity_id"] for step in run["path"]]
    assert steps[:2] == ["StartEvent_Referral", "Timer_EnrolLate"]  # enrolment took 30 h: past its 24 h timer
    assert steps[-1] == "End_Done"
    enrol = next(step for step in run["path"] if step["activity_id"] == "Task_Enrol")
    assert enrol["hours"] == 30 and enrol["lane"] == "Coordinator"
    [alert] = run["alerts"]
    assert alert["kind"] == "escalation" and alert["activity_id"] == "Task_Enrol" and alert["role"] == "coordinator"
    assert {"service.skipped", "message.delivered", "timer.fired", "task.escalated"} <= {
        e["type"] for e in run["events"]
    }
    assert run["vein_to_vein"]["hours"] is None  # the mini diagram records no infusion
    with app.app_context():
        assert _counts() == before


def test_a_forced_branch_and_a_batch(api, world):
    draft = _draft(api, world)
    designer = api.as_(world["designer"])
    forced = designer.post(
        f"{DRAFTS}/{draft['id']}/simulate", json={"data": ENROL, "gateways": {"Gateway_Eligible": "Flow_no"}}
    ).get_json()
    assert forced["end"]["activity_id"] == "End_NotEligible"

    body = {"data": ENROL, "durations": {"Task_Enrol": [12, 36]}, "runs": 50, "seed": 4}
    report = designer.post(f"{DRAFTS}/{draft['id']}/simulate", json=body).get_json()
    assert report["runs"] == report["completed_runs"] == 50
    assert report == designer.post(f"{DRAFTS}/{draft['id']}/simulate", json=body).get_json()
    [late] = report["escalations"]
    assert late["activity_id"] == "Timer_EnrolLate" and 10 < late["runs"] < 40
    assert report["ends"][0]["activity_id"] == "End_Done" and report["ends"][0]["count"] == 50


def test_the_bundled_journey_reports_vein_to_vein_by_the_records_rule(app, api, world, bundled):
    # A busy test machine must not fail a run's scripts (each run has the limits of a real therapy's steps).
    app.config.update(SCRIPT_TIME_LIMIT=10.0, ENGINE_TIME_BUDGET=60.0)
    draft = _draft(api, world, "autologous_car_t")
    body = {"durations": {"Event_ManufacturingStarted": [48, 48], "Task_Apheresis": [4, 4]}}
    run = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/simulate", json=body).get_json()
    assert run["status"] == "completed", run["problem"]
    # The apheresis form's collection_completed_at is the simulated moment the collection task was completed.
    assert run["vein_to_vein"]["collection_at"] == "2026-11-23T15:00:00Z"
    assert run["vein_to_vein"]["hours"] == 61.0
    skipped = {e["activity_id"] for e in run["events"] if e["type"] == "service.skipped"}
    assert "Task_BookSlots" in skipped and "Task_AssignCoi" not in skipped  # coi.assign is pure: it runs

    batch = api.as_(world["admin"]).post(
        f"{DRAFTS}/{draft['id']}/simulate",
        json={"durations": {"Event_ManufacturingStarted": [24, 480]}, "runs": 20, "seed": 1},
    )
    report = batch.get_json()
    spread = report["vein_to_vein"]
    assert report["statuses"] == {"completed": 20}, report["problems"]
    assert spread["count"] == 20 and sum(b["count"] for b in spread["histogram"]) == 20
    assert spread["min_hours"] <= spread["p50_hours"] <= spread["max_hours"]


def test_a_deployed_version_can_be_tried_too(api, world):
    url = "/api/v1/process-definitions/mini_therapy/versions/1/simulate"
    run = api.as_(world["designer"]).post(url, json={"data": ENROL}).get_json()
    assert run["status"] == "completed" and run["end"]["activity_id"] == "End_Done"
    later = api.as_(world["designer"]).post(url, json={"data": ENROL, "start_at": "2027-03-01T08:00:00+01:00"})
    assert later.get_json()["started_at"] == "2027-03-01T07:00:00Z"
    assert later.get_json()["path"][1]["ended_at"] == "2027-03-01T08:00:00Z"  # the enrolment took an hour
    missing = api.as_(world["designer"]).post("/api/v1/process-definitions/mini_therapy/versions/7/simulate", json={})
    assert missing.status_code == 404


def test_a_loop_is_bounded_and_a_failing_step_is_reported(api, world):
    draft = _draft(api, world)
    failed = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/simulate", json={}).get_json()
    assert failed["status"] == "failed" and "eligible" in failed["problem"]
    assert failed["events"][-1]["activity_id"] == "Gateway_Eligible"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"durations": {"Task_Enrol": [3, 1]}}, "durations"),
        ({"durations": {"Task_Enrol": [1]}}, "durations"),
        ({"durations": {"Task_Enrol": [-1, 2]}}, "durations"),
        ({"durations": {"Task_Nope": [1, 2]}}, "durations.Task_Nope"),
        ({"gateways": {"Gateway_Eligible": "Flow_1"}}, "gateways.Gateway_Eligible"),
        ({"gateways": {"Task_Enrol": "Flow_2"}}, "gateways.Task_Enrol"),
        ({"data": {"Nowhere": {"a": 1}}}, "data.Nowhere"),
        ({"runs": 501}, "runs"),
        ({"runs": 0}, "runs"),
        ({"runs": "ten"}, "runs"),
        ({"seed": -1}, "seed"),
        ({"start_at": "yesterday"}, "start_at"),
        ({"start_at": "9999-12-31T00:00:00Z"}, "start_at"),
        ({"durations": {"Task_Enrol": [1, 1e9]}}, "durations"),
        ({"data": {"Task_Enrol": [1]}}, "data"),
        ({"colour": "red"}, "colour"),
        ({"default_hours": [2, 1]}, "default_hours"),
    ],
)
def test_bad_options_are_a_422_naming_the_field(api, world, body, field):
    draft = _draft(api, world)
    response = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/simulate", json=body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["error"]["details"]["fields"]


def test_a_draft_that_fails_a_check_cannot_be_tried(api, world):
    draft = _draft(api, world)
    broken = draft["bpmn"].replace("mini-enrol.schema.json", "no-such-form.json")
    api.as_(world["designer"]).put(f"{DRAFTS}/{draft['id']}", json={"bpmn": broken})
    response = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/simulate", json={})
    error = response.get_json()["error"]
    assert response.status_code == 422 and error["code"] == "draft_invalid"
    assert error["details"]["problems"][0]["element_id"] == "Task_Enrol"


@pytest.mark.parametrize("who", ["coord", "qa", "auditor", "integrator"])
def test_only_designers_and_admins_try_drafts(api, world, who):
    draft = _draft(api, world)
    assert api.as_(world[who]).post(f"{DRAFTS}/{draft['id']}/simulate", json={}).status_code == 403
    url = "/api/v1/process-definitions/mini_therapy/versions/1/simulate"
    assert api.as_(world[who]).post(url, json={}).status_code == 403


def test_the_studio_page_tries_the_diagram_as_drawn(app, world):
    from ..support.pages import csrf, signed_in

    designer = signed_in(app, "designer")
    token = csrf(designer, "/studio")
    draft_url = designer.post("/studio", data={"key": "mini_therapy", "csrf_token": token}).headers["Location"]
    page = designer.get(draft_url).get_data(as_text=True)
    assert "data-studio-try" in page and "studio-try.js" in page
    assert designer.post(f"{draft_url}/simulate", json={}).status_code == 400  # no CSRF token
    headers = {"X-CSRFToken": token}
    draft_id = draft_url.rsplit("/", 1)[1]
    with app.app_context():
        from server.store.models import ProcessDraft

        xml = db.session.get(ProcessDraft, draft_id).bpmn_xml
    # The diagram as drawn (renamed, unsaved) is what runs; the draft itself is not changed.
    drawn = xml.replace('name="Not eligible"', 'name="Not eligible after all"')
    body = {"bpmn": drawn, "data": ENROL, "gateways": {"Gateway_Eligible": "Flow_no"}}
    run = designer.post(f"{draft_url}/simulate", json=body, headers=headers).get_json()
    assert run["end"] == {"activity_id": "End_NotEligible", "name": "Not eligible after all"}
    with app.app_context():
        assert db.session.get(ProcessDraft, draft_id).bpmn_xml == xml
    bad = designer.post(f"{draft_url}/simulate", json={"runs": 9999}, headers=headers)
    assert bad.status_code == 422 and "runs" in bad.get_json()["error"]["details"]["fields"]
    batch = designer.post(f"{draft_url}/simulate", json={"data": ENROL, "runs": 5}, headers=headers).get_json()
    assert batch["completed_runs"] == 5
    coordinator = signed_in(app, "coord")
    assert coordinator.post(f"{draft_url}/simulate", json={}, headers=headers).status_code in {400, 403}


def test_a_diagram_that_loops_without_waiting_is_stopped_by_the_engines_budget(api, world):
    from ..support import hostile
    from .test_hostile_diagrams import upload

    assert upload(api, world["designer"], hostile.looping("loop_try", before="task")).status_code == 201
    url = "/api/v1/process-definitions/loop_try/versions/1/simulate"
    run = api.as_(world["designer"]).post(url, json={}).get_json()
    assert run["status"] == "failed"
    assert "ran past its limit" in run["problem"] and run["events"][-1]["type"] == "error"
    # The completion that ran into the loop is undone, as it is for a real therapy.
    assert [step["activity_id"] for step in run["path"]] == ["Start_1"]


def test_form_data_may_not_set_what_the_server_sets(api, world):
    url = "/api/v1/process-definitions/mini_therapy/versions/1/simulate"
    body = {"data": {"Task_Enrol": {"eligible": True, "patient_initials": "AB", "coi": "X"}}}
    run = api.as_(world["designer"]).post(url, json=body).get_json()
    assert run["status"] == "failed" and "coi" in run["problem"]
