"""Hold and resume: nothing of a held therapy moves, and its clocks go on with the time they had left."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import Alert, AuditEntry, Therapy

from ..support.journeys import ENROLMENT, complete, enrol, fire, only_task, start


def _hold(api, world, therapy, **body):
    return api.as_(world["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/hold", json={"reason_code": "PATIENT_UNWELL", **body}
    )


def _resume(api, world, therapy):
    return api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/resume", json={})


def _escalations(app, therapy_id: str) -> int:
    with app.app_context():
        rows = db.session.execute(select(Alert).where(Alert.therapy_id == therapy_id, Alert.kind == "escalation"))
        return len(rows.scalars().all())


def test_a_held_window_fires_later_by_the_time_it_was_held(app, api, world, clock):
    therapy = start(api, world["coord"])  # enrolment has a 24 h escalation window
    started = clock.now
    task = only_task(api, world["coord"], therapy["id"])
    clock.advance(hours=1)
    held = _hold(api, world, therapy, reason="Fever")
    assert held.status_code == 200, held.get_json()
    assert held.get_json()["status"] == "on_hold" and held.get_json()["held_since"]
    refused = complete(api, world["coord"], task["id"], ENROLMENT)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "on_hold"
    clock.advance(hours=24)  # past the original window: nothing fires while held
    assert not fire(app, therapy["id"]) and _escalations(app, therapy["id"]) == 0
    resumed_at = started + timedelta(hours=26)
    clock.now = resumed_at  # held for 25 h in all
    resumed = _resume(api, world, therapy)
    assert resumed.status_code == 200 and resumed.get_json()["status"] == "active"
    assert resumed.get_json()["next_due_at"].startswith((resumed_at + timedelta(hours=23)).isoformat()[:16])
    clock.advance(hours=22, minutes=59)
    fire(app, therapy["id"])
    assert _escalations(app, therapy["id"]) == 0
    clock.advance(minutes=2)
    assert fire(app, therapy["id"]) and _escalations(app, therapy["id"]) == 1
    with app.app_context():
        actions = db.session.execute(
            select(AuditEntry.action).where(AuditEntry.therapy_id == therapy["id"]).order_by(AuditEntry.seq)
        ).scalars()
        listed = list(actions)
        assert listed.index("therapy.held") < listed.index("therapy.resumed") < listed.index("task.escalated")


def test_a_message_that_comes_while_held_is_taken_on_resume(app, api, world):
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)  # now waiting for shipment.delivered
    assert _hold(api, world, therapy).status_code == 200
    body = {"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"carrier": "X"}}
    kept = api.as_(world["integrator"]).post("/api/v1/messages", json=body)
    assert kept.status_code == 202 and kept.get_json()["held"] is True
    with app.app_context():
        assert db.session.get_one(Therapy, therapy["id"]).stage.startswith("On hold")
    assert _resume(api, world, therapy).status_code == 200
    receipt = only_task(api, world["logistics"], therapy["id"])
    assert receipt["activity_id"] == "Task_Receive"


@pytest.mark.parametrize(
    ("who", "path", "body", "status", "code"),
    [
        ("coord", "resume", {}, 409, "not_held"),
        ("coord", "hold", {"reason_code": "NOPE"}, 422, "unknown_reason_code"),
        ("coord", "hold", {"reason_code": "OTHER"}, 422, "reason_required"),
        ("coord", "hold", {}, 422, "invalid_request"),
        ("coordb", "hold", {"reason_code": "CAPACITY"}, 404, "not_found"),
        ("logistics", "hold", {"reason_code": "CAPACITY"}, 403, "forbidden"),
    ],
)
def test_wrong_holds_and_resumes_are_refused(api, world, who, path, body, status, code):
    therapy = start(api, world["coord"])
    refused = api.as_(world[who]).post(f"/api/v1/therapies/{therapy['id']}/{path}", json=body)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (status, code), refused.get_json()
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["status"] == "active"


def test_a_held_therapy_cannot_be_held_again_but_can_be_cancelled(api, world):
    therapy = start(api, world["coord"])
    assert _hold(api, world, therapy).status_code == 200
    again = _hold(api, world, therapy)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_held"
    listed = api.as_(world["coord"]).get("/api/v1/therapies?status=on_hold").get_json()["items"]
    assert [t["id"] for t in listed] == [therapy["id"]]
    cancelled = api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "Withdrew"})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    ended = _hold(api, world, therapy)
    assert ended.status_code == 409 and ended.get_json()["error"]["code"] == "not_active"


def test_the_record_tells_the_hold_and_the_resume_in_plain_words(api, world, clock):
    therapy = start(api, world["coord"])
    assert _hold(api, world, therapy, reason="Fever").status_code == 200
    clock.advance(hours=3)
    assert _resume(api, world, therapy).status_code == 200
    record = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_json()
    names = [s["name"] for s in record["steps"] if s["action"] in ("therapy.held", "therapy.resumed")]
    assert names == ["Held (PATIENT_UNWELL: Fever)", "Resumed after 3.0 h on hold"]


def test_a_task_keeps_its_missed_deadline_until_done_and_a_hold_moves_one_still_ahead(app, api, world, clock):
    late = start(api, world["coord"])  # enrolment: a 24 h escalation window, not interrupting
    clock.advance(hours=25)
    assert fire(app, late["id"])
    [task] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={late['id']}").get_json()["items"]
    assert task["late"] is True and task["due_at"] is not None, "the escalation fired; the task is still late"
    assert task["due_at"] < clock.now.isoformat()
    ahead = start(api, world["coord"])
    [before] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={ahead['id']}").get_json()["items"]
    inbox = api.as_(world["coord"]).get("/api/v1/tasks").get_json()["items"]
    assert [t["therapy_id"] for t in inbox][:2] == [late["id"], ahead["id"]], "the late task first"
    clock.advance(hours=2)
    assert _hold(api, world, ahead).status_code == 200
    clock.advance(hours=5)
    assert _resume(api, world, ahead).status_code == 200
    [after] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={ahead['id']}").get_json()["items"]
    moved = datetime.fromisoformat(after["due_at"]) - datetime.fromisoformat(before["due_at"])
    assert moved == timedelta(hours=5) and after["late"] is False
    [still] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={late['id']}").get_json()["items"]
    assert still["due_at"] == task["due_at"] and still["late"] is True


def test_the_task_page_says_late_since_when_after_its_escalation_fired(app, api, world, clock):
    from ..support.pages import signed_in
    from .test_web_lifecycle import _words
    from .test_web_network import _text

    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    clock.advance(hours=30)
    assert fire(app, therapy["id"])
    page = _words(_text(signed_in(app, "coord"), f"/tasks/{task['id']}"))
    assert re.search(r"DueLate since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(6 h 0 min ago\)", page), page[:2000]
    assert "Late" in _words(_text(signed_in(app, "coord"), "/tasks"))


def test_a_kept_message_that_no_longer_fits_after_a_migration_is_refused_on_resume(app, api, world):
    """Held, a message kept, then moved to a version whose schema the message fails: the resume goes through,
    the message is refused (audited) and the therapy still waits for it."""
    from server.workflow.definitions import deploy

    from ..conftest import ROOT

    therapy = start(api, world["coord"])
    enrol(api, world, therapy)  # waits for shipment.delivered
    assert _hold(api, world, therapy).status_code == 200
    body = {"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"dock": 3}}
    assert api.as_(world["integrator"]).post("/api/v1/messages", json=body).status_code == 202
    mini = (ROOT / "tests" / "fixtures" / "mini.bpmn").read_text()
    strict = mini.replace(
        '<bpmn:intermediateCatchEvent id="Event_Delivered" name="Shipment delivered">',
        '<bpmn:intermediateCatchEvent id="Event_Delivered" name="Shipment delivered"><bpmn:extensionElements>'
        '<spiffworkflow:properties><spiffworkflow:property name="payloadSchema" value="strict.message.json"/>'
        "</spiffworkflow:properties></bpmn:extensionElements>",
    )
    schema = b'{"type": "object", "required": ["tracking"], "properties": {"tracking": {"type": "string"}}}'
    forms = {p.name: p.read_bytes() for p in (ROOT / "tests" / "fixtures").glob("*.json")}
    with app.app_context():
        row, created = deploy(strict.encode(), {**forms, "strict.message.json": schema}, "test")
        assert created and row.version == 2
    moved = api.as_(world["designer"]).post(
        "/api/v1/process-definitions/mini_therapy/migrations", json={"from_version": 1, "to_version": 2}
    )
    assert moved.status_code == 200 and moved.get_json()["results"][0]["ok"], moved.get_json()
    resumed = _resume(api, world, therapy)
    assert resumed.status_code == 200 and resumed.get_json()["status"] == "active"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [w.get("name") for w in detail["waiting_for"]] == ["shipment.delivered"]
    with app.app_context():
        refusals = db.session.execute(
            select(AuditEntry).where(AuditEntry.therapy_id == therapy["id"], AuditEntry.action == "message.refused")
        ).scalars()
        assert [e.data.get("reason") for e in refusals] == ["invalid_payload"]
