"""The live event stream (Server-Sent Events): read from a running ``tether serve`` and from the app itself."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
import requests

from ..conftest import ROOT
from ..support.served import cli_user, serving, tether_cli

PASSWORD = "long-enough-pw-1"


def parse_sse(text: str) -> list[dict]:
    """The events of an SSE text: ``{"id": int, "event": CloudEvent}``; comments and retry lines skipped."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": json.loads(fields["data"])})
    return events


class Stream:
    """An SSE connection read incrementally, as a browser's EventSource would."""

    def __init__(self, base: str, token: str, last_event_id: int | None = None, query: str = ""):
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.response = requests.get(f"{base}/events{query}", headers=headers, stream=True, timeout=(5, 20))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.chunks = self.response.iter_content(chunk_size=None, decode_unicode=True)
        self.buffer = ""
        self.heartbeats = 0

    def read_until(self, wanted, deadline_seconds: float = 30) -> list[dict]:
        """Events until ``wanted(events)`` holds."""
        events: list[dict] = []
        deadline = time.monotonic() + deadline_seconds
        while not wanted(events):
            assert time.monotonic() < deadline, f"stream gave only {[e['event']['type'] for e in events]}"
            while "\n\n" not in self.buffer:
                self.buffer += next(self.chunks)
            block, self.buffer = self.buffer.split("\n\n", 1)
            self.heartbeats += block.startswith(": heartbeat")
            events.extend(parse_sse(block + "\n\n"))
        return events

    def close(self) -> None:
        """Hang up."""
        self.response.close()


@pytest.fixture
def served(tmp_path):
    """A running ``tether serve`` on SQLite with two sites, site staff and an integrator."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TETHER_PROCESSES_DIR": str(tmp_path / "processes"),
        "TETHER_FORMS_DIR": str(ROOT / "tests/fixtures"),
        "TETHER_EVENTS_HEARTBEAT_SECONDS": "1",
        "TETHER_EVENTS_POLL_SECONDS": "0.5",
        "TETHER_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "TETHER_WEBHOOK_POLL_SECONDS": "0.5",
    }
    (tmp_path / "processes").mkdir()
    shutil.copy(ROOT / "tests/fixtures/mini.bpmn", tmp_path / "processes" / "mini.bpmn")
    assert tether_cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    for site in ("SITE-A", "SITE-B"):
        assert tether_cli("site", "add", site, env=env, cwd=tmp_path).returncode == 0
    people = {"coord": ("coordinator", "SITE-A"), "coordb": ("coordinator", "SITE-B"), "courier": ("integrator", None)}
    tokens = {
        name: cli_user(name, role, site, PASSWORD, env=env, cwd=tmp_path) for name, (role, site) in people.items()
    }
    with serving(env, tmp_path) as (base, _proc, _log):
        yield base, tokens


@pytest.mark.slow
def test_stream_from_a_running_server_follows_changes_and_resumes(served):
    base, tokens = served

    def call(method, path, who, **kw):
        answer = requests.request(
            method, base + path, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=10, **kw
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    courier = Stream(base, tokens["courier"])
    site_b = Stream(base, tokens["coordb"])
    therapy = call(
        "POST",
        "/therapies",
        "coord",
        json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}},
    )
    [task] = call("GET", f"/tasks?therapy_id={therapy['id']}", "coord")["items"]
    call("POST", f"/tasks/{task['id']}/complete", "coord", json={"data": {"eligible": True, "patient_initials": "AB"}})
    call(
        "POST",
        "/messages",
        "courier",
        json={"name": "shipment.delivered", "coi": therapy["coi"], "payload": {"dock": 3}},
    )

    seen = courier.read_until(lambda events: any(e["event"]["type"] == "message.received" for e in events))
    types = [e["event"]["type"] for e in seen]
    assert [t for t in types if t != "alert.raised"][:3] == ["therapy.started", "task.ready", "task.completed"]
    assert "alert.raised" in types and types[-1] == "message.received"  # notify told logistics on the way
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    for item in seen:
        event = item["event"]
        assert event["specversion"] == "1.0" and event["source"] == "urn:tether" and event["id"]
        assert event["subject"] == therapy["id"] and event["data"]["coi"] == therapy["coi"]
    courier.read_until(lambda events: courier.heartbeats > 0)
    courier.close()

    resumed = Stream(base, tokens["courier"], last_event_id=seen[1]["id"])
    again = resumed.read_until(lambda events: len(events) >= len(seen) - 2)
    assert [e["event"]["id"] for e in again] == [e["event"]["id"] for e in seen[2:]]
    resumed.close()

    other = call(
        "POST",
        "/therapies",
        "coordb",
        json={"process_key": "mini_therapy", "site": "SITE-B", "patient": {"reference": "PT-2"}},
    )
    first = site_b.read_until(lambda events: len(events) >= 1)[0]
    assert first["event"]["type"] == "therapy.started" and first["event"]["subject"] == other["id"]
    site_b.close()


def test_stream_shows_each_caller_only_what_they_may_see_and_filters_types(api, world, app):
    app.config["EVENTS_STREAM_SECONDS"] = 0.5
    app.config["EVENTS_HEARTBEAT_SECONDS"] = 0.1
    body = {"process_key": "mini_therapy", "patient": {"reference": "PT-1"}}
    at_a = api.as_(world["coord"]).post("/api/v1/therapies", json={**body, "site": "SITE-A"}).get_json()
    at_b = api.as_(world["coordb"]).post("/api/v1/therapies", json={**body, "site": "SITE-B"}).get_json()

    def read(token, query="?last_event_id=0", **headers):
        answer = api.as_(token).get(f"/api/v1/events{query}", headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_data(as_text=True)

    everything = parse_sse(read(world["integrator"]))
    assert {e["event"]["subject"] for e in everything if e["event"]["type"] == "therapy.started"} == {
        at_a["id"],
        at_b["id"],
    }
    site_b = parse_sse(read(world["coordb"]))
    assert {e["event"].get("subject") for e in site_b if e["event"]["type"] != "definition.deployed"} == {at_b["id"]}
    started = parse_sse(read(world["auditor"], "?last_event_id=0&types=therapy.*"))
    assert [e["event"]["type"] for e in started] == ["therapy.started", "therapy.started"]
    resumed = parse_sse(read(world["integrator"], "", **{"Last-Event-ID": str(everything[-2]["id"])}))
    assert [e["id"] for e in resumed] == [everything[-1]["id"]]
    # Without Last-Event-ID: only what happens from now on; a stream with nothing to send keeps the connection
    # alive with heartbeats (the streams above may spend their half second catching up, with no pause for one).
    idle = read(world["integrator"], "")
    assert parse_sse(idle) == [] and ": heartbeat" in idle

    assert api.as_(world["integrator"]).get("/api/v1/events", headers={"Last-Event-ID": "x"}).status_code == 400
    assert api.as_(world["integrator"]).get("/api/v1/events?types=Bad*Pattern").status_code == 422
    assert api.get("/api/v1/events").status_code == 401


def test_open_streams_per_process_are_bounded(api, world, app):
    app.config["EVENTS_MAX_STREAMS"] = 1
    first = api.as_(world["integrator"]).get("/api/v1/events")
    assert first.status_code == 200
    answers = []
    other = threading.Thread(target=lambda: answers.append(api.as_(world["integrator"]).get("/api/v1/events")))
    other.start()  # another connection, as another server thread would serve it
    other.join(timeout=30)
    assert answers[0].status_code == 429 and answers[0].get_json()["error"]["code"] == "too_many_requests"
    first.close()
    app.config["EVENTS_STREAM_SECONDS"] = 0.1
    assert api.as_(world["integrator"]).get("/api/v1/events").status_code == 200


def test_served_dispatcher_delivers_signed_webhooks_in_order_also_after_downtime(served):
    from standardwebhooks.webhooks import Webhook

    from ..integration.test_webhooks import Receiver

    base, tokens = served
    endpoint = Receiver().start()

    def call(method, path, who, **kw):
        answer = requests.request(
            method, base + path, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=10, **kw
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    def wait_for(count, seconds=30):
        deadline = time.monotonic() + seconds
        while len(endpoint.accepted) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return [json.loads(body) for _headers, body in endpoint.accepted]

    try:
        hook = call(
            "POST",
            "/webhooks",
            "courier",
            json={"url": endpoint.url, "events": ["therapy.*", "task.*", "message.received"]},
        )
        therapy = call(
            "POST",
            "/therapies",
            "coord",
            json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}},
        )
        assert [e["type"] for e in wait_for(2)] == ["therapy.started", "task.ready"]

        endpoint.stop()  # the receiver goes down; events keep happening
        [task] = call("GET", f"/tasks?therapy_id={therapy['id']}", "coord")["items"]
        call(
            "POST",
            f"/tasks/{task['id']}/complete",
            "coord",
            json={"data": {"eligible": True, "patient_initials": "AB"}},
        )
        call("POST", "/messages", "courier", json={"name": "shipment.delivered", "coi": therapy["coi"]})
        time.sleep(2)
        pending = call("GET", f"/webhooks/{hook['id']}/deliveries?status=pending", "courier")["items"]
        assert len(pending) == 3 and max(d["attempts"] for d in pending) >= 1
        endpoint.start()  # back up: the retries bring everything, in order

        events = wait_for(5)
        assert [e["type"] for e in events] == [
            "therapy.started",
            "task.ready",
            "task.completed",
            "message.received",
            "task.ready",
        ]
        for headers, body in endpoint.accepted:
            Webhook(hook["secret"]).verify(body, headers)
        assert len({e["id"] for e in events}) == 5
    finally:
        endpoint.stop()
