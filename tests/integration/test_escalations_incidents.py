"""Escalations raise alerts people can see and acknowledge; failing service tasks retry, then become
incidents an admin retries or resolves; the scheduler fires what came due while the server was down."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from ..conftest import FIXTURES
from ..support.journeys import audit_actions, complete, deliver, enrol, fire, start, tasks_of

COURIER_URL = "https://courier.example/book"


def deploy(app, name: str, replace: tuple[bytes, bytes] | None = None) -> None:
    from server.workflow.definitions import deploy as deploy_definition

    content = (FIXTURES / name).read_bytes()
    if replace:
        content = content.replace(*replace)
    with app.app_context():
        deploy_definition(content, {}, "test")


def rows(app, model, **where) -> list:
    from server.store.extensions import db

    with app.app_context():
        query = sa.select(model).where(*[getattr(model, k) == v for k, v in where.items()])
        found = list(db.session.execute(query).scalars())
        db.session.expunge_all()
        return found


def outbox_types(app, therapy_id) -> list[str]:
    from server.store.models import OutboxEvent

    return [e.type for e in rows(app, OutboxEvent, therapy_id=therapy_id)]


@pytest.fixture
def no_outside_calls(monkeypatch):
    """Fail the test if anything makes an HTTP request."""

    def refuse(*args, **kwargs):
        raise AssertionError("an escalation must not call anything outside synchronously")

    monkeypatch.setattr(requests.sessions.Session, "request", refuse)


# -- escalations -------------------------------------------------------------------------------------------
def test_late_task_raises_an_escalation_alert_for_its_role(app, api, world, clock, no_outside_calls):
    therapy = start(api, world["coord"])
    [task] = tasks_of(api, world["coord"], therapy["id"])
    due = clock.now + timedelta(hours=24)
    assert task["due_at"] == due.isoformat().replace("+00:00", "Z"), "the boundary timer's due time shows"
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["next_due_at"] == task["due_at"]

    clock.advance(hours=23, minutes=59)
    assert fire(app, therapy["id"]) is False, "nothing is due yet"
    clock.advance(minutes=2)
    assert fire(app, therapy["id"]) is True

    alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["kind"], alert["status"], alert["role"], alert["activity_id"]) == (
        "escalation",
        "open",
        "coordinator",
        "Task_Enrol",
    )
    assert "Enrol patient" in alert["message"] and "coordinator" in alert["message"]
    assert alert["data"]["task_id"] == task["id"] and alert["acknowledged_by"] is None
    assert [t["id"] for t in tasks_of(api, world["coord"], therapy["id"])] == [task["id"]], "the task stays open"

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [a["id"] for a in detail["alerts"]] == [alert["id"]]
    assert {"timer.fired", "task.escalated", "alert.raised"} <= set(audit_actions(api, world, therapy["id"]))
    published = outbox_types(app, therapy["id"])
    assert published.count("task.escalated") == 1 and published.count("alert.raised") == 1
    assert fire(app, therapy["id"]) is False, "an escalation fires once"


def test_bundled_process_escalates_a_late_fresh_delivery(app, api, world, clock):
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    from ..scenario_data import form_data

    with app.app_context():
        deploy_bundled(project_root() / "processes")
    therapy = start(api, world["coord"], "autologous_car_t")
    for activity_id in ("Task_Enrolment", "Task_Scheduling", "Task_Apheresis"):
        [task] = tasks_of(api, world["coord"], therapy["id"])
        assert task["activity_id"] == activity_id
        done = complete(api, world["coord"], task["id"], form_data(task["form"]["name"], therapy["coi"]))
        assert done.status_code == 200, done.get_json()
    deliver(api, world, therapy, "courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"})
    therapy = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    [wait] = [w for w in therapy["waiting_for"] if w["activity_id"] == "Event_FreshDeliveryOverdue"]
    clock.advance(hours=24, seconds=1)
    assert fire(app, therapy["id"]) is True
    alerts = api.as_(world["logistics"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    [escalation] = [a for a in alerts if a["kind"] == "escalation"]
    assert (escalation["activity_id"], escalation["role"]) == ("Task_AwaitFreshDelivery", "logistics")
    assert "Fresh material in transit to manufacturing" in escalation["message"]
    assert any(a["kind"] == "notification" for a in alerts), "the diagram's own notify step ran too"
    assert fire(app, therapy["id"]) is False
    deliver(api, world, therapy, payload={"delivered_to": "MFG-1"})  # the late delivery is still awaited
    assert wait["due_at"] is not None


def test_alerts_are_site_scoped_and_acknowledged_once(app, api, world, clock):
    therapy = start(api, world["coord"])
    clock.advance(hours=25)
    assert fire(app, therapy["id"])
    [alert] = api.as_(world["coord"]).get("/api/v1/alerts?status=open").get_json()["items"]

    assert api.as_(world["coordb"]).get("/api/v1/alerts").get_json()["items"] == []
    assert (
        api.as_(world["coordb"]).post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "x"}).status_code
        == 404
    )
    assert (
        api.as_(world["auditor"]).post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "x"}).status_code
        == 403
    )
    assert api.as_(world["coord"]).get("/api/v1/alerts?status=closed").status_code == 400

    done = api.as_(world["coord"]).post(
        f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "Called the patient; enrolment tomorrow"}
    )
    assert done.status_code == 200, done.get_json()
    assert (done.get_json()["status"], done.get_json()["acknowledged_by"]) == ("acknowledged", "coord")
    again = api.as_(world["coord"]).post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "again"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_acknowledged"
    assert api.as_(world["coord"]).get("/api/v1/alerts?status=open").get_json()["items"] == []
    acknowledged = api.as_(world["admin"]).get("/api/v1/alerts?status=acknowledged").get_json()["items"]
    assert [a["id"] for a in acknowledged] == [alert["id"]]
    assert "alert.acknowledged" in audit_actions(api, world, therapy["id"])


def test_cycle_timer_escalates_three_times(app, api, world, clock):
    deploy(
        app,
        "timers-user-task.bpmn",
        (b"<bpmn:timeDuration>PT2H</bpmn:timeDuration>", b"<bpmn:timeCycle>R3/PT1H</bpmn:timeCycle>"),
    )
    therapy = start(api, world["coord"], "timers_user_task")
    for _hour in range(5):
        clock.advance(hours=1, seconds=1)
        fire(app, therapy["id"])
    alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    assert [a["activity_id"] for a in alerts] == ["Task_Review"] * 3
    assert audit_actions(api, world, therapy["id"]).count("timer.fired") == 3


# -- incidents ---------------------------------------------------------------------------------------------
class Courier:
    """Stands in for the courier's booking API behind the http operator."""

    def __init__(self):
        self.answer: object = ConnectionError("courier API refused the connection")
        self.calls = 0

    def __call__(self, method, url, **kwargs):
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        response = requests.Response()
        response.status_code, response._content = self.answer, b'{"booking": "B-77"}'
        return response


@pytest.fixture
def courier(app, monkeypatch):
    """The incident diagram deployed, with its courier API failing until told otherwise."""
    deploy(app, "incident-service.bpmn")
    fake = Courier()
    app.config["HTTP_OPERATOR_NETWORKS"] = "*"  # courier.example does not resolve here: the fake answers instead
    monkeypatch.setattr("requests.Session.request", lambda _session, method, url, **kw: fake(method, url, **kw))
    return fake


def prepare_shipper(api, world):
    """Start a booking therapy and complete its first task, which reaches the courier booking."""
    therapy = start(api, world["coord"], "incident_service", data={"courier_url": COURIER_URL})
    [task] = tasks_of(api, world["logistics"], therapy["id"])
    done = complete(api, world["logistics"], task["id"], {"boxes": 2})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["task"]["status"] == "completed", "the completion is kept although the next step failed"
    return therapy, task


def incident_of(api, world, therapy_id):
    [incident] = api.as_(world["admin"]).get(f"/api/v1/therapies/{therapy_id}").get_json()["incidents"]
    return incident


def test_failing_service_task_retries_with_backoff_then_opens_an_incident(app, api, world, clock, courier):
    therapy, task = prepare_shipper(api, world)
    assert api.as_(world["logistics"]).get(f"/api/v1/tasks/{task['id']}").get_json()["status"] == "completed"
    incident = incident_of(api, world, therapy["id"])
    assert (incident["status"], incident["attempts"], incident["activity_id"]) == ("retrying", 1, "Service_BookCourier")
    assert incident["message"] == "http failed: courier API refused the connection"
    assert incident["error_type"] == "ConnectionError"
    first_retry = clock.now + timedelta(seconds=3)  # backoff_base 3 in the diagram: 3 s, then 9 s
    assert incident["next_retry_at"] == first_retry.isoformat().replace("+00:00", "Z")
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["next_due_at"] == incident["next_retry_at"], "the retry is armed like a timer"
    assert api.as_(world["admin"]).get("/api/v1/incidents?status=open").get_json()["items"] == []

    assert fire(app, therapy["id"]) is False, "no retry before its time"
    clock.advance(seconds=3, milliseconds=1)
    courier.answer = 503
    assert fire(app, therapy["id"]) is True
    incident = incident_of(api, world, therapy["id"])
    assert (incident["status"], incident["attempts"]) == ("retrying", 2)
    assert "503" in incident["last_error"] and incident["message"].endswith("refused the connection")

    clock.advance(seconds=9, milliseconds=1)
    courier.answer = requests.Timeout("read timed out after 10 s")
    assert fire(app, therapy["id"]) is True
    incident = incident_of(api, world, therapy["id"])
    assert (incident["status"], incident["attempts"], incident["next_retry_at"]) == ("open", 3, None)
    assert [a["error_type"] for a in incident["history"]] == ["ConnectionError", "RuntimeError", "Timeout"]
    assert incident["message"] == "http failed: courier API refused the connection", "the first error stays"
    assert courier.calls == 3

    listed = api.as_(world["admin"]).get("/api/v1/incidents?status=open").get_json()["items"]
    assert [i["id"] for i in listed] == [incident["id"]]
    assert api.as_(world["coord"]).get("/api/v1/incidents").status_code == 403
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["next_due_at"] is None and detail["open_tasks"] == []
    assert [a["kind"] for a in detail["alerts"]] == ["incident"]
    assert outbox_types(app, therapy["id"]).count("incident.opened") == 1
    assert audit_actions(api, world, therapy["id"]).count("service.failed") == 3
    clock.advance(hours=1)
    assert fire(app, therapy["id"]) is False and courier.calls == 3, "an open incident waits for a person"


def open_incident(app, api, world, clock, courier):
    therapy, _task = prepare_shipper(api, world)
    for wait in (3, 9):
        clock.advance(seconds=wait, milliseconds=1)
        assert fire(app, therapy["id"])
    incident = incident_of(api, world, therapy["id"])
    assert incident["status"] == "open"
    return therapy, incident


def test_admin_retries_an_open_incident(app, api, world, clock, courier):
    therapy, incident = open_incident(app, api, world, clock, courier)
    url = f"/api/v1/incidents/{incident['id']}/retry"
    assert api.as_(world["logistics"]).post(url).status_code == 403

    still = api.as_(world["admin"]).post(url)
    assert still.status_code == 200, still.get_json()
    assert (still.get_json()["incident"]["status"], still.get_json()["incident"]["attempts"]) == ("open", 4)

    courier.answer = 201
    done = api.as_(world["admin"]).post(url)
    assert done.status_code == 200, done.get_json()
    resolved = done.get_json()["incident"]
    assert (resolved["status"], resolved["resolution"], resolved["resolved_by"]) == ("resolved", "retried", "admin")
    assert [t["activity_id"] for t in tasks_of(api, world["logistics"], therapy["id"])] == ["Task_Handover"]
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["booking"] == {"status": 201, "body": {"booking": "B-77"}}
    assert outbox_types(app, therapy["id"]).count("incident.resolved") == 1
    again = api.as_(world["admin"]).post(url)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "incident_resolved"


def test_admin_resolves_an_incident_with_a_reason(app, api, world, clock, courier):
    therapy, incident = open_incident(app, api, world, clock, courier)
    url = f"/api/v1/incidents/{incident['id']}/resolve"
    missing = api.as_(world["admin"]).post(url, json={})
    assert missing.status_code == 422
    assert incident_of(api, world, therapy["id"])["status"] == "open", "a refused request changes nothing"

    done = api.as_(world["admin"]).post(
        url, json={"reason": "Booked by phone with the courier", "result": {"booking": "PHONE-1"}}
    )
    assert done.status_code == 200, done.get_json()
    resolved = done.get_json()["incident"]
    assert (resolved["status"], resolved["resolution"], resolved["reason"]) == (
        "resolved",
        "resolved",
        "Booked by phone with the courier",
    )
    assert courier.calls == 3, "resolving does not call the courier again"
    assert [t["activity_id"] for t in tasks_of(api, world["logistics"], therapy["id"])] == ["Task_Handover"]
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["data"]["booking"] == {
        "booking": "PHONE-1"
    }
    entries = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    [resolution] = [e for e in entries["items"] if e["action"] == "incident.resolved"]
    assert resolution["reason"] == "Booked by phone with the courier" and resolution["actor"] == "admin"
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def test_automatic_retry_that_succeeds_closes_the_incident_quietly(app, api, world, clock, courier):
    therapy, _task = prepare_shipper(api, world)
    courier.answer = 200
    clock.advance(seconds=4)
    assert fire(app, therapy["id"])
    incident = incident_of(api, world, therapy["id"])
    assert (incident["status"], incident["resolution"]) == ("resolved", "retried")
    assert [t["activity_id"] for t in tasks_of(api, world["logistics"], therapy["id"])] == ["Task_Handover"]
    assert "incident.opened" not in outbox_types(app, therapy["id"])


def test_service_task_without_retry_settings_retries_three_times_and_leaves_nothing_half_done(
    app, api, world, clock, monkeypatch
):
    from server.store import audit
    from server.workflow import operators

    def half_done_notify(context, params):
        audit.append(
            context.actor,
            "notification.sent",
            "therapy",
            context.therapy.id,
            therapy_id=context.therapy.id,
            data={"role": params["role"]},
        )
        raise OSError("mail relay unreachable")

    monkeypatch.setitem(operators.OPERATORS, "notify", (half_done_notify, ""))
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)
    for attempt in range(1, 5):
        incident = incident_of(api, world, therapy["id"])
        assert incident["attempts"] == attempt and incident["retries"] == 3
        clock.advance(seconds=5**attempt, milliseconds=1)
        fire(app, therapy["id"])
    assert incident_of(api, world, therapy["id"])["status"] == "open"
    assert "notification.sent" not in audit_actions(api, world, therapy["id"]), "the failed call left nothing"


def test_cancelling_the_therapy_closes_its_incident_and_stops_the_retries(app, api, world, clock, courier):
    therapy, _task = prepare_shipper(api, world)
    cancelled = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "Patient withdrew consent"}
    )
    assert cancelled.status_code == 200, cancelled.get_json()
    incident = incident_of(api, world, therapy["id"])
    assert (incident["status"], incident["resolution"], incident["next_retry_at"]) == (
        "resolved",
        "therapy_ended",
        None,
    )
    clock.advance(minutes=5)
    assert fire(app, therapy["id"]) is False and courier.calls == 1


# -- the scheduler -----------------------------------------------------------------------------------------
def wait_until(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_timer_that_came_due_while_the_server_was_down_fires_once_at_start(app, api, world, clock):
    from server.workflow.scheduler import TimerScheduler

    therapy = start(api, world["coord"])
    clock.advance(hours=30)  # the server was down when the escalation came due

    def fired_count():
        return audit_actions(api, world, therapy["id"]).count("timer.fired")

    scheduler = TimerScheduler(app)
    try:
        assert scheduler.start() == 1
        assert wait_until(lambda: fired_count() == 1), "the overdue timer fires right after start"
        assert wait_until(lambda: scheduler.armed() == 0)
        scheduler.sweep()
        with app.app_context():
            scheduler.rearm_all()
        time.sleep(0.3)
        assert fired_count() == 1, "nothing fires twice"
        alerts = api.as_(world["coord"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
        assert [a["kind"] for a in alerts] == ["escalation"]
    finally:
        scheduler.shutdown()


def test_the_sweep_arms_an_overdue_therapy_that_lost_its_job(app, api, world, clock):
    from server import start_scheduler

    scheduler = start_scheduler(app)
    try:
        therapy = start(api, world["coord"])
        scheduler.disarm(therapy["id"])  # as if the process died between the commit and the arming
        clock.advance(hours=25)
        assert scheduler.sweep() == 1
        assert wait_until(lambda: audit_actions(api, world, therapy["id"]).count("timer.fired") == 1)
        assert scheduler.sweep() == 0
    finally:
        scheduler.shutdown()
        app.extensions.pop("tether_scheduler", None)


def test_each_commit_arms_or_disarms_the_therapy_job(app, api, world, clock):
    from server import start_scheduler

    scheduler = start_scheduler(app)
    try:
        therapy = start(api, world["coord"])
        job = scheduler.scheduler.get_job(f"timer:{therapy['id']}")
        assert job is not None
        assert timedelta(hours=23, minutes=59) < job.next_run_time - _real_now() <= timedelta(hours=24)
        enrol(api, world, therapy, eligible=False)
        assert scheduler.scheduler.get_job(f"timer:{therapy['id']}") is None, "nothing left to wait for"
    finally:
        scheduler.shutdown()
        app.extensions.pop("tether_scheduler", None)


def _real_now():
    from server.store.models import utcnow

    return utcnow()
