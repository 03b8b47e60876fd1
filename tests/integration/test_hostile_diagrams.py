"""Hostile and careless diagrams through the API: nothing they do stops the service or other therapies."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from engine import isolation

from ..support import hostile
from ..support.journeys import audit_actions, complete, enrol, fire, only_task, post_therapy, start, tasks_of

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def upload(api, token, content: bytes, name: str = "diagram.bpmn"):
    from io import BytesIO

    return api.as_(token).client.post(
        "/api/v1/process-definitions",
        data={"bpmn": (BytesIO(content), name)},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )


def therapy_count(app) -> int:
    from server.store.extensions import db
    from server.store.models import Therapy

    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(Therapy)).scalar_one()


def incidents_of(api, world, therapy_id):
    return api.as_(world["admin"]).get(f"/api/v1/incidents?therapy_id={therapy_id}").get_json()["items"]


def mini_therapy_runs(api, world) -> None:
    """Another therapy starts and its first task completes: the service is not stuck."""
    enrol(api, world, start(api, world["coord"], data={"patient_initials": "AB"}))


@pytest.fixture
def budget(app):
    """A small engine budget so that loops are stopped quickly (200 steps, or a second of CPU: three in wall time)."""
    app.config.update(ENGINE_MAX_STEPS=200, ENGINE_TIME_BUDGET=1.0)


def test_a_loop_at_start_is_stopped_undone_and_leaves_an_incident(app, api, world, budget):
    assert upload(api, world["designer"], hostile.looping("loop_start")).status_code == 201
    began = time.monotonic()
    created = post_therapy(api, world["coord"], "loop_start")
    assert time.monotonic() - began < 10
    assert created.status_code == 201, created.get_json()
    therapy = created.get_json()
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "active" and detail["open_tasks"] == [] and detail["waiting_for"] == []
    assert "laps" not in detail["data"], "no step of the loop is kept"
    [incident] = incidents_of(api, world, therapy["id"])
    assert incident["status"] == "open" and incident["activity_id"] in ("Script_Loop", "Gateway_Again")
    assert "loops" in incident["message"]
    assert {"therapy.started", "step.undone", "incident.opened"} <= set(audit_actions(api, world, therapy["id"]))
    mini_therapy_runs(api, world)
    cancelled = api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "loops"})
    assert cancelled.status_code == 200, cancelled.get_json()
    assert incidents_of(api, world, therapy["id"])[0]["status"] == "resolved"


def test_a_loop_after_a_task_refuses_the_completion_and_keeps_the_task(app, api, world, budget):
    assert upload(api, world["designer"], hostile.looping("loop_task", before="task")).status_code == 201
    therapy = start(api, world["coord"], "loop_task")
    task = only_task(api, world["coord"], therapy["id"])
    refused = complete(api, world["coord"], task["id"], {})
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "step_budget_exceeded" and error["details"]["incident_id"]
    again = tasks_of(api, world["coord"], therapy["id"])
    assert [t["id"] for t in again] == [task["id"]], "the completion was undone: the task is still ready"
    assert api.as_(world["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()["status"] == "ready"
    refused_twice = complete(api, world["coord"], task["id"], {})
    assert refused_twice.get_json()["error"]["details"]["incident_id"] == error["details"]["incident_id"]
    [incident] = incidents_of(api, world, therapy["id"])
    assert incident["attempts"] == 2 and incident["status"] == "open"
    mini_therapy_runs(api, world)


def test_a_loop_behind_a_timer_halts_the_timers_until_an_admin_acts(app, api, world, clock, budget):
    from server.store.extensions import db
    from server.store.models import Therapy

    assert upload(api, world["designer"], hostile.looping("loop_timer", before="timer")).status_code == 201
    therapy = start(api, world["coord"], "loop_timer")
    clock.advance(seconds=2)
    assert fire(app, therapy["id"]) is False
    with app.app_context():
        stored = db.session.get(Therapy, therapy["id"])
        assert stored.next_due_at is None, "the scheduler does not come back to it (nor after a restart)"
    assert fire(app, therapy["id"]) is False
    [incident] = incidents_of(api, world, therapy["id"])
    assert incident["status"] == "open" and incident["attempts"] == 1
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [w["activity_id"] for w in detail["waiting_for"]] == ["Timer_Soon"], "the firing was undone"
    retried = api.as_(world["admin"]).post(f"/api/v1/incidents/{incident['id']}/retry")
    assert retried.status_code == 409 and "loops" in retried.get_json()["error"]["message"]
    resolved = api.as_(world["admin"]).post(
        f"/api/v1/incidents/{incident['id']}/resolve", json={"reason": "diagram to be fixed; therapy will be cancelled"}
    )
    assert resolved.status_code == 200, resolved.get_json()
    cancelled = api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "loops"})
    assert cancelled.status_code == 200


@pytest.mark.parametrize("name", sorted(hostile.HUGE_TEXT))
def test_huge_text_from_a_script_is_refused_and_stores_nothing(app, api, world, name):
    key = f"huge_{name}"
    assert upload(api, world["designer"], hostile.scripted(key, hostile.HUGE_TEXT[name])).status_code == 201
    before = therapy_count(app)
    refused = post_therapy(api, world["coord"], key)
    assert refused.status_code == 422, refused.get_json()
    assert refused.get_json()["error"]["code"] == "script_failed"
    assert "memory" in refused.get_json()["error"]["message"] or "stored" in refused.get_json()["error"]["message"]
    assert therapy_count(app) == before


def test_process_data_over_the_limit_is_refused(app, api, world):
    app.config.update(MAX_PROCESS_DATA_CHARS=10_000)
    assert upload(api, world["designer"], hostile.scripted("big_data", "s = 'x' * 20000")).status_code == 201
    refused = post_therapy(api, world["coord"], "big_data")
    assert refused.status_code == 422 and "10000 characters" in refused.get_json()["error"]["message"]
    assert upload(api, world["designer"], hostile.scripted("small_data", "s = 'x' * 2000")).status_code == 201
    assert post_therapy(api, world["coord"], "small_data").status_code == 201


def test_one_long_builtin_call_is_cut_at_the_deadline(app, api, world):
    app.config.update(SCRIPT_TIME_LIMIT=0.5)
    assert upload(api, world["designer"], hostile.scripted("slow_call", hostile.SLOW_CALL)).status_code == 201
    began = time.monotonic()
    refused = post_therapy(api, world["coord"], "slow_call")  # unbounded, this comparison runs for hours
    assert time.monotonic() - began < (0.5 + isolation.GRACE_SECONDS) * isolation.WALL_FACTOR + 5
    assert refused.status_code == 422 and "time limit" in refused.get_json()["error"]["message"]
    mini_therapy_runs(api, world)


@pytest.mark.parametrize("script", ["coi = 'W123426000001'", "patient_reference = 'someone else'", "del site"])
def test_scripts_cannot_change_what_the_server_set(app, api, world, script):
    assert upload(api, world["designer"], hostile.scripted("protected", script)).status_code == 201
    refused = post_therapy(api, world["coord"], "protected")
    assert refused.status_code == 422, refused.get_json()
    assert "may not change" in refused.get_json()["error"]["message"]


def test_form_data_cannot_overwrite_the_coi(app, api, world):
    created = start(api, world["coord"], data={"patient_initials": "AB"})
    task = only_task(api, world["coord"], created["id"])
    refused = complete(api, world["coord"], task["id"], {"eligible": True, "coi": "X"})
    assert refused.status_code == 422, refused.get_json()
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{created['id']}").get_json()
    assert detail["data"]["coi"] == created["coi"]


@pytest.mark.parametrize("element", ["task", "manualTask"])
def test_tasks_nobody_would_do_are_refused_at_upload(app, api, world, element):
    refused = upload(api, world["designer"], hostile.with_element(f"idle_{element}", element))
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["details"]["element_id"] == "Odd_1" and error["details"]["line"] == 8
    assert "userTask" in error["message"]


@pytest.mark.parametrize("build", [hostile.completion_condition, hostile.conditional_event])
def test_every_expression_is_checked_at_upload(app, api, world, build):
    refused = upload(api, world["designer"], build("odd_expression", "().__class__.__base__"))
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"]["element_id"] in ("Task_Many", "Wait_Condition")


def _hold_write_lock(app, database_url, release: threading.Event, held: threading.Event) -> None:
    """Hold the database's write lock (SQLite) or the "system" audit chain's head row (PostgreSQL) until ``release``."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        connection.execute("ROLLBACK")
        connection.close()
        return
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT seq FROM audit_chain_head WHERE chain = 'system' FOR UPDATE"))
        held.set()
        release.wait(30)
        connection.rollback()
    engine.dispose()


def test_health_says_when_writes_are_stuck(app, api, world, database_url):
    app.config.update(HEALTH_WRITE_TIMEOUT=0.3)
    healthy = api.get("/api/v1/health")
    assert healthy.status_code == 200 and healthy.get_json()["writes"] == "ok"
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(app, database_url, release, held))
    holder.start()
    try:
        assert held.wait(10)
        stuck = api.get("/api/v1/health")
        assert stuck.status_code == 503
        assert stuck.get_json()["writes"] == "stuck" and stuck.get_json()["status"] == "degraded"
    finally:
        release.set()
        holder.join(10)
    assert api.get("/api/v1/health").get_json()["writes"] == "ok"
