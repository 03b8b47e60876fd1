"""Real ``tether serve`` processes: two on one PostgreSQL fire each of 200 timers exactly once, and a
short timer fires in a running server on time, also when it came due while the server was down."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest
import requests
import sqlalchemy as sa

from ..conftest import FIXTURES
from ..support.served import Server, prepare_served, served_environment
from .conftest import PG_URL, _with_database

pytestmark = pytest.mark.slow
TIMERS = 200


@pytest.fixture
def postgres_database():
    """A fresh, empty PostgreSQL database for real server processes."""
    if not PG_URL:
        pytest.skip("needs TETHER_TEST_POSTGRES_URL (scripts/with-postgres)")
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"tether_two_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield _with_database(PG_URL, name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_two_servers_fire_each_of_200_timers_exactly_once(tmp_path, postgres_database):
    env = served_environment(tmp_path, postgres_database, (FIXTURES / "timers-due-date.bpmn").read_bytes())
    _token, ids = prepare_served(env, TIMERS, first_due_in=10, spread=4)
    engine = sa.create_engine(postgres_database)
    with engine.connect() as conn:
        seeded = dict(conn.execute(sa.text("SELECT id, row_version FROM therapy")).all())
    servers = [Server(env, tmp_path, "first"), Server(env, tmp_path, "second")]
    try:
        for server in servers:
            server.wait_healthy()

        def completed() -> int:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM therapy WHERE status = 'completed'")).scalar()

        deadline = time.monotonic() + 40
        while completed() < TIMERS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert completed() == TIMERS, "every timer fired"
        time.sleep(1.5)  # a duplicate firing, if there were one, would land now
        with engine.connect() as conn:
            fired = dict(
                conn.execute(
                    sa.text(
                        "SELECT therapy_id, count(*) FROM audit_entry WHERE action = 'timer.fired' GROUP BY therapy_id"
                    )
                ).all()
            )
            versions = dict(conn.execute(sa.text("SELECT id, row_version FROM therapy")).all())
        assert sorted(fired) == sorted(ids)
        assert set(fired.values()) == {1}, "no timer fired twice"
        assert {versions[i] - seeded[i] for i in ids} == {1}, "each therapy was stepped once, by one server"
    finally:
        for server in servers:
            server.stop()
        engine.dispose()
    verified = subprocess.run(
        [sys.executable, "-m", "server.cli", "audit", "verify"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, "the audit chain never forked: " + verified.stdout + verified.stderr


def test_short_timer_fires_in_a_running_server_and_after_a_restart(tmp_path):
    diagram = (
        (FIXTURES / "timers-user-task.bpmn")
        .read_bytes()
        .replace(b"<bpmn:timeDuration>PT2H</bpmn:timeDuration>", b"<bpmn:timeDuration>PT2S</bpmn:timeDuration>")
    )
    env = served_environment(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", diagram)
    token, _ids = prepare_served(env)
    headers = {"Authorization": f"Bearer {token}"}

    def start_therapy(base: str) -> dict:
        created = requests.post(
            f"{base}/therapies",
            headers=headers,
            timeout=10,
            json={"process_key": "timers_user_task", "site": "SITE-A", "patient": {"reference": "PT-1"}},
        )
        assert created.status_code == 201, created.text
        return created.json()

    def escalations(base: str, therapy_id: str) -> list:
        return requests.get(f"{base}/alerts?therapy_id={therapy_id}", headers=headers, timeout=10).json()["items"]

    server = Server(env, tmp_path, "running")
    try:
        server.wait_healthy()
        therapy = start_therapy(server.base)
        started = time.monotonic()
        [task] = requests.get(f"{server.base}/tasks?therapy_id={therapy['id']}", headers=headers, timeout=10).json()[
            "items"
        ]
        assert task["due_at"] is not None
        while not escalations(server.base, therapy["id"]) and time.monotonic() - started < 10:
            time.sleep(0.1)
        waited = time.monotonic() - started
        [alert] = escalations(server.base, therapy["id"])
        assert alert["kind"] == "escalation" and alert["activity_id"] == "Task_Review"
        assert 1.9 <= waited <= 4.0, f"the PT2S escalation fired after {waited:.2f} s"

        overdue = start_therapy(server.base)
    finally:
        server.stop()
    time.sleep(2.5)  # the second therapy's escalation comes due while no server runs
    restarted = Server(env, tmp_path, "restarted")
    try:
        restarted.wait_healthy()
        back = time.monotonic()
        while not escalations(restarted.base, overdue["id"]) and time.monotonic() - back < 5:
            time.sleep(0.1)
        assert len(escalations(restarted.base, overdue["id"])) == 1, "it fires right after the restart"
        assert len(escalations(restarted.base, therapy["id"])) == 1, "and nothing fires twice"
    finally:
        restarted.stop()
    shutil.rmtree(tmp_path / "processes")


def test_a_therapy_held_across_a_restart_keeps_the_time_its_window_had_left(tmp_path):
    """An 8 s escalation window held after 2 s, through a restart of the server and past its original due time:
    nothing fires while held, and after the resume it fires when the 6 s it had left have run."""
    diagram = (
        (FIXTURES / "timers-user-task.bpmn")
        .read_bytes()
        .replace(b"<bpmn:timeDuration>PT2H</bpmn:timeDuration>", b"<bpmn:timeDuration>PT8S</bpmn:timeDuration>")
    )
    env = served_environment(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", diagram)
    token, _ids = prepare_served(env)
    headers = {"Authorization": f"Bearer {token}"}

    def escalations(base: str, therapy_id: str) -> list:
        return requests.get(f"{base}/alerts?therapy_id={therapy_id}", headers=headers, timeout=10).json()["items"]

    def post(base: str, path: str, body: dict) -> dict:
        answer = requests.post(f"{base}{path}", headers=headers, json=body, timeout=10)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    server = Server(env, tmp_path, "before")
    try:
        server.wait_healthy()
        body = {"process_key": "timers_user_task", "site": "SITE-A", "patient": {"reference": "PT-1"}}
        asked = time.monotonic()
        therapy = post(server.base, "/therapies", body)
        started = time.monotonic()
        time.sleep(2)
        held = post(server.base, f"/therapies/{therapy['id']}/hold", {"reason_code": "PATIENT_UNWELL"})
        assert held["status"] == "on_hold" and held["next_due_at"] is None
        # The least the window can have kept: 8 s less all that passed from asking to start until the hold's
        # answer (about 6 s; less when a busy machine answers slowly).
        least_left = 8 - (time.monotonic() - asked)
    finally:
        server.stop()
    time.sleep(max(0.0, 10 - (time.monotonic() - started)))  # past the original due time, no server running
    restarted = Server(env, tmp_path, "after")
    try:
        restarted.wait_healthy()
        time.sleep(1.5)
        assert escalations(restarted.base, therapy["id"]) == [], "nothing fires while the therapy is held"
        back = time.monotonic()  # the window runs again from some moment after this
        resumed = post(restarted.base, f"/therapies/{therapy['id']}/resume", {})
        assert resumed["status"] == "active"
        time.sleep(max(0.0, least_left - 1.5 - (time.monotonic() - back)))
        assert escalations(restarted.base, therapy["id"]) == [], "the window has about 6 s left after the resume"
        while not escalations(restarted.base, therapy["id"]) and time.monotonic() - back < 15:
            time.sleep(0.1)
        waited = time.monotonic() - back
        [alert] = escalations(restarted.base, therapy["id"])
        assert alert["kind"] == "escalation" and alert["activity_id"] == "Task_Review"
        assert least_left <= waited <= 12.0, f"the escalation fired {waited:.2f} s after the resume ({least_left:.2f})"
    finally:
        restarted.stop()
    shutil.rmtree(tmp_path / "processes")
