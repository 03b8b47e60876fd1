"""kill -9 in the middle of concurrent work: after a restart on the same database every answer given holds.

A real ``tether serve`` (two worker processes) takes task completions and message deliveries, each with an
``Idempotency-Key``, from several threads; its whole process group is killed with SIGKILL while requests are
in flight, and it is started again on the same database. Then every request that got a 2xx has its effect,
every key (also of the requests that died) resolves to a final answer with no second effect, the audit chain
verifies, and a timer armed before the kill fires after the restart.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from ..conftest import FIXTURES, ROOT
from ..support.served import KillableServer, database_for, served_app

pytestmark = pytest.mark.slow

THERAPIES = 24
THREADS = 6
ENROL = {"data": {"eligible": True, "patient_initials": "KC"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def served_database(request, tmp_path):
    """A fresh database for the servers of one test, on each backend."""
    yield from database_for(request.param, tmp_path)


def _environment(tmp_path: Path, database_url: str) -> dict:
    """The servers' settings: the mini diagram and the due-date timer diagram, no webhook dispatcher."""
    processes = tmp_path / "processes"
    processes.mkdir()
    shutil.copy(FIXTURES / "mini.bpmn", processes / "mini.bpmn")
    shutil.copy(FIXTURES / "timers-due-date.bpmn", processes / "timers.bpmn")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": database_url,
        "TETHER_PROCESSES_DIR": str(processes),
        "TETHER_FORMS_DIR": str(FIXTURES),
        "TETHER_SECRET_KEY": "crash-consistency",
        "TETHER_DISPATCHER": "false",
    }


def _seed(env: dict) -> tuple[dict, list[tuple[str, str]]]:
    """Schema, diagrams, a site, a coordinator and an integrator, and therapies waiting at their first task.

    Returns their tokens (and an auditor's) and (therapy id, enrolment task id) per therapy.
    """
    from sqlalchemy import select

    from server.access import accounts
    from server.store.extensions import db
    from server.store.models import TaskRecord
    from server.workflow.therapies import start_therapy

    with served_app(env):
        accounts.add_user("coord", ["coordinator"], ["SITE-A"], "Coord Person", "long-enough-pw-1", "test")
        accounts.add_user("courier", ["integrator"], [], "Courier System", "long-enough-pw-1", "test")
        accounts.add_user("inspector", ["auditor"], [], "Inspector", "long-enough-pw-1", "test")
        tokens = {name: accounts.issue_token(name, "test", "test") for name in ("coord", "courier", "inspector")}
        seeded = []
        for i in range(THERAPIES):
            therapy = start_therapy("mini_therapy", None, "SITE-A", f"PT-{i:03d}", None, "seed")
            task_id = db.session.execute(
                select(TaskRecord.id).where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "ready")
            ).scalar_one()
            seeded.append((therapy.id, task_id))
    return tokens, seeded


class Workload:
    """Each therapy's two keyed requests (enrol, then the delivery), sent from several threads."""

    def __init__(self, base: str, tokens: dict, seeded: list[tuple[str, str]]):
        self.base, self.tokens, self.seeded = base, tokens, seeded
        self.sent: dict[str, tuple[str, dict, str]] = {}  # key: (path, body, caller), once it was sent
        self.answers: dict[str, tuple[int, dict, dict]] = {}  # key: (status, body, headers) of answered ones
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def requests_of(self, therapy_id: str, task_id: str) -> list[tuple[str, str, dict, str]]:
        """The two keyed requests of one therapy: (key, path, body, caller)."""
        return [
            (f"enrol-{therapy_id}", f"/tasks/{task_id}/complete", ENROL, "coord"),
            (
                f"deliver-{therapy_id}",
                "/messages",
                {"name": "shipment.delivered", "therapy_id": therapy_id, "payload": {"dock": 4}},
                "courier",
            ),
        ]

    def post(self, session: requests.Session, key: str, path: str, body: dict, caller: str) -> requests.Response:
        """One keyed POST as ``caller``."""
        return session.post(
            self.base + path,
            json=body,
            timeout=20,
            headers={"Authorization": f"Bearer {self.tokens[caller]}", "Idempotency-Key": key},
        )

    def run(self, share: list[tuple[str, str]]) -> None:
        """Send the requests of ``share`` in order until the server is gone."""
        session = requests.Session()
        for therapy_id, task_id in share:
            for key, path, body, caller in self.requests_of(therapy_id, task_id):
                if self.stopped.is_set():
                    return
                with self.lock:
                    self.sent[key] = (path, body, caller)
                try:
                    answer = self.post(session, key, path, body, caller)
                except requests.RequestException:  # the server died under this request
                    self.stopped.set()
                    return
                with self.lock:
                    self.answers[key] = (answer.status_code, answer.json(), dict(answer.headers))
                if answer.status_code != 200:
                    break  # this therapy's delivery would only be refused; go on with the next one

    def answered(self) -> int:
        """How many requests got an answer so far."""
        with self.lock:
            return len(self.answers)


def _get(base: str, token: str, path: str) -> dict:
    """A GET that must succeed."""
    answer = requests.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.json()


def test_kill_9_mid_traffic_keeps_every_answer_and_every_key_final(tmp_path, served_database):
    env = _environment(tmp_path, served_database)
    tokens, seeded = _seed(env)
    server = KillableServer(env, tmp_path, "killed")
    workload = Workload(server.base, tokens, seeded)
    try:
        server.wait_healthy()
        threads = [threading.Thread(target=workload.run, args=(seeded[i::THREADS],)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while workload.answered() < THERAPIES * 2 // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert workload.answered() >= THERAPIES * 2 // 3, "the workload got going"
        due = time.time() + 3.0
        timer = requests.post(
            server.base + "/therapies",
            timeout=20,
            headers={"Authorization": f"Bearer {tokens['coord']}", "Idempotency-Key": "timer-before-kill"},
            json={
                "process_key": "timers_due_date",
                "site": "SITE-A",
                "patient": {"reference": "PT-TIMER"},
                "data": {"due_at": _iso(due)},
            },
        )
        assert timer.status_code == 201, timer.text
        server.kill()  # requests are still in flight (the threads keep sending until they fail)
        killed_at = time.time()
        for thread in threads:
            thread.join(30)
    finally:
        server.stop()
    assert killed_at < due, "the timer was still armed when the server died"
    died = [key for key in workload.sent if key not in workload.answers]
    assert died, "the kill came while requests were in flight"
    refused = {key: (status, body) for key, (status, body, _headers) in workload.answers.items() if status != 200}
    assert not refused, refused

    restarted = KillableServer(env, tmp_path, "restarted")
    try:
        restarted.wait_healthy()
        _check_after_restart(restarted.base, tokens, seeded, workload, timer.json()["id"])
    finally:
        restarted.stop()


def _iso(epoch: float) -> str:
    """An epoch time as ISO 8601 in UTC."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _check_after_restart(base: str, tokens: dict, seeded: list, workload: Workload, timer_id: str) -> None:
    """Every 2xx has its effect; every key gives a final answer, with no second effect; chain and timer hold."""
    coord = tokens["coord"]
    tasks = dict(seeded)
    for therapy_id, task_id in seeded:  # what was answered 2xx is in the data
        if workload.answers.get(f"enrol-{therapy_id}", (0,))[0] == 200:
            assert _get(base, coord, f"/tasks/{task_id}")["status"] == "completed"
        if workload.answers.get(f"deliver-{therapy_id}", (0,))[0] == 200:
            detail = _get(base, coord, f"/therapies/{therapy_id}")
            assert detail["data"]["shipment.delivered"] == {"dock": 4}
            assert [t["name"] for t in detail["open_tasks"]] == ["Receive shipment"]

    workload.base, session = base, requests.Session()
    for therapy_id, task_id in seeded:  # every key again (and the requests never sent), in each therapy's order
        for key, path, body, caller in workload.requests_of(therapy_id, task_id):
            again = workload.post(session, key, path, body, caller)
            assert again.status_code == 200, (key, again.status_code, again.text)
            first = workload.answers.get(key)
            if first is not None:
                assert again.headers.get("Idempotent-Replayed") == "true", key
                assert again.json() == first[1], key
            replay = workload.post(session, key, path, body, caller)
            assert replay.status_code == 200 and replay.json() == again.json(), key
            assert replay.headers.get("Idempotent-Replayed") == "true", key

    inspector = tokens["inspector"]
    for therapy_id in tasks:  # one completion and one delivery each, whatever died and was retried
        actions = [e["action"] for e in _get(base, inspector, f"/audit?therapy_id={therapy_id}&limit=500")["items"]]
        assert actions.count("task.completed") == 1, (therapy_id, actions)
        assert actions.count("message.received") == 1, (therapy_id, actions)
        detail = _get(base, coord, f"/therapies/{therapy_id}")
        assert [t["name"] for t in detail["open_tasks"]] == ["Receive shipment"]

    verdict = _get(base, inspector, "/audit/verify")
    assert verdict["ok"] is True, verdict

    deadline = time.monotonic() + 20
    while _get(base, coord, f"/therapies/{timer_id}")["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _get(base, coord, f"/therapies/{timer_id}")["status"] == "completed", "the timer fired after the restart"
    timeline = [e["action"] for e in _get(base, coord, f"/therapies/{timer_id}/timeline")["items"]]
    assert timeline.count("timer.fired") == 1
