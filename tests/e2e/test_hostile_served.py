"""Hostile diagrams against a real ``tether serve``: every case answers quickly and the service keeps working.

Each case is one a careless designer or an attacker could upload: a loop that never waits (at start, after a
task, behind a timer, across a restart), one long built-in call, text that bypasses a line-by-line memory
check, a script that rewrites the chain of identity, tasks nobody would do and unchecked expressions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from ..conftest import ROOT
from ..support import hostile
from ..support.journeys import therapy_request
from ..support.served import Server, cli_user, database_for, tether_cli

pytestmark = pytest.mark.slow
PASSWORD = "long-enough-pw-1"
FAST = 8.0  # seconds within which every answer below must come, whatever the diagram does


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path):
    yield from database_for(request.param, tmp_path)


def _prepare(tmp_path: Path, database_url: str) -> tuple[dict, dict]:
    """Migrate, register a site and users (designer, coordinator, admin); returns (env, tokens)."""
    (tmp_path / "processes").mkdir()
    (tmp_path / "processes" / "mini.bpmn").write_bytes((ROOT / "tests/fixtures/mini.bpmn").read_bytes())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": database_url,
        "TETHER_PROCESSES_DIR": str(tmp_path / "processes"),
        "TETHER_FORMS_DIR": str(ROOT / "tests/fixtures"),
        "TETHER_SECRET_KEY": "hostile",
        "TETHER_DISPATCHER": "false",
        "TETHER_ENGINE_MAX_STEPS": "300",
        "TETHER_SCRIPT_TIME_LIMIT": "1.0",
        # A loop is stopped at 300 steps or a second of the command's CPU (three in wall time), well within FAST.
        "TETHER_ENGINE_TIME_BUDGET": "1.0",
    }
    tether_cli("db", "upgrade", env=env, cwd=tmp_path, check=True)
    tether_cli("site", "add", "SITE-A", "--name", "Centre A", env=env, cwd=tmp_path, check=True)
    tokens = {}
    for name, role in (("designer", "designer"), ("coord", "coordinator"), ("admin", "admin")):
        site = "SITE-A" if role == "coordinator" else None
        tokens[name] = cli_user(name, role, site, PASSWORD, env=env, cwd=tmp_path)
    return env, tokens


class Client:
    """Bearer-token calls to one server, each timed."""

    def __init__(self, base: str, tokens: dict):
        self.base, self.tokens = base, tokens

    def call(self, method: str, path: str, who: str, **kw) -> requests.Response:
        began = time.monotonic()
        response = requests.request(
            method, f"{self.base}{path}", timeout=60, headers={"Authorization": f"Bearer {self.tokens[who]}"}, **kw
        )
        assert time.monotonic() - began < FAST, f"{method} {path} took {time.monotonic() - began:.1f} s"
        return response

    def upload(self, content: bytes) -> requests.Response:
        return self.call("POST", "/process-definitions", "designer", files={"bpmn": ("d.bpmn", content)})

    def start(self, key: str) -> requests.Response:
        return self.call("POST", "/therapies", "coord", json=therapy_request(key, reference="PT-9"))

    def incidents(self, therapy_id: str) -> list:
        return self.call("GET", f"/incidents?therapy_id={therapy_id}", "admin").json()["items"]

    def still_serving(self) -> None:
        """Health is ok, and another therapy starts and moves on."""
        health = requests.get(f"{self.base}/health", timeout=10)
        assert health.status_code == 200 and health.json()["writes"] == "ok", health.text
        created = self.start("mini_therapy")
        assert created.status_code == 201, created.text
        tasks = self.call("GET", f"/tasks?therapy_id={created.json()['id']}", "coord").json()["items"]
        done = self.call(
            "POST",
            f"/tasks/{tasks[0]['id']}/complete",
            "coord",
            json={"data": {"eligible": False, "patient_initials": "CD"}},
        )
        assert done.status_code == 200, done.text


@pytest.fixture
def served(tmp_path, backend_url):
    env, tokens = _prepare(tmp_path, backend_url)
    server = Server(env, tmp_path, "hostile")
    server.wait_healthy()
    yield Client(server.base, tokens), server, env
    server.stop()


def test_hostile_diagrams_through_a_served_process(served):
    client, _server, _env = served

    # 1. A loop as the therapy starts: stopped, undone, an incident; everything else works; it can be cancelled.
    assert client.upload(hostile.looping("loop_start")).status_code == 201
    looping = client.start("loop_start")
    assert looping.status_code == 201, looping.text
    [incident] = client.incidents(looping.json()["id"])
    assert incident["status"] == "open" and "loops" in incident["message"]
    client.still_serving()
    cancelled = client.call("POST", f"/therapies/{looping.json()['id']}/cancel", "coord", json={"reason": "loops"})
    assert cancelled.status_code == 200, cancelled.text

    # 1. A loop behind a user task: the completion is refused and undone, the task stays ready.
    assert client.upload(hostile.looping("loop_task", before="task")).status_code == 201
    therapy = client.start("loop_task").json()
    [task] = client.call("GET", f"/tasks?therapy_id={therapy['id']}", "coord").json()["items"]
    refused = client.call("POST", f"/tasks/{task['id']}/complete", "coord", json={"data": {}})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "step_budget_exceeded"
    assert client.call("GET", f"/tasks/{task['id']}", "coord").json()["status"] == "ready"
    client.still_serving()

    # 2. One long built-in call: cut at the deadline, every time it is retried.
    assert client.upload(hostile.scripted("slow_call", hostile.SLOW_CALL)).status_code == 201
    for _attempt in range(2):
        slow = client.start("slow_call")
        assert slow.status_code == 422 and "time limit" in slow.json()["error"]["message"], slow.text
    client.still_serving()

    # 3. Text built by one call: refused, nothing stored.
    for name, script in hostile.HUGE_TEXT.items():
        assert client.upload(hostile.scripted(f"huge_{name}", script)).status_code == 201
        huge = client.start(f"huge_{name}")
        assert huge.status_code == 422 and huge.json()["error"]["code"] == "script_failed", huge.text
        listed = client.call("GET", f"/therapies?process_key=huge_{name}", "coord").json()["items"]
        assert listed == []

    # 8. Diagrams that cannot run, or hide an expression, are refused at upload.
    for content in (
        hostile.with_element("idle_task", "task"),
        hostile.with_element("idle_manual", "manualTask"),
        hostile.completion_condition("odd_completion", "().__class__"),
        hostile.conditional_event("odd_condition", "().__class__"),
    ):
        assert client.upload(content).status_code == 422

    # 9. A script may not rewrite the chain of identity.
    assert client.upload(hostile.scripted("rewrite_coi", "coi = 'W123426000001'")).status_code == 201
    rewrite = client.start("rewrite_coi")
    assert rewrite.status_code == 422 and "may not change coi" in rewrite.json()["error"]["message"]
    client.still_serving()


def test_a_loop_behind_a_timer_is_halted_once_and_stays_halted_after_a_restart(tmp_path, backend_url):
    env, tokens = _prepare(tmp_path, backend_url)
    server = Server(env, tmp_path, "first")
    server.wait_healthy()
    try:
        client = Client(server.base, tokens)
        assert client.upload(hostile.looping("loop_timer", before="timer")).status_code == 201
        therapy = client.start("loop_timer").json()
        deadline = time.monotonic() + 30
        while not client.incidents(therapy["id"]) and time.monotonic() < deadline:
            time.sleep(0.3)
        [incident] = client.incidents(therapy["id"])
        assert incident["attempts"] == 1 and incident["status"] == "open"
        client.still_serving()
    finally:
        server.stop()
    restarted = Server(env, tmp_path, "second")
    restarted.wait_healthy()
    try:
        client = Client(restarted.base, tokens)
        time.sleep(2)  # the scheduler re-armed everything due at start
        [incident] = client.incidents(therapy["id"])
        assert incident["attempts"] == 1, "the scheduler did not enter the loop again after the restart"
        cancelled = client.call("POST", f"/therapies/{therapy['id']}/cancel", "coord", json={"reason": "loops"})
        assert cancelled.status_code == 200, cancelled.text
        client.still_serving()
    finally:
        restarted.stop()
