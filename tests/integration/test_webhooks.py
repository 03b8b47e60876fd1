"""Webhooks: subscriptions, fan-out of outbox events, signed CloudEvents to a real HTTP receiver, retries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from ..support.journeys import complete_only_task, deliver, enrol, start
from .conftest import PASSWORD


class Receiver:
    """A real HTTP endpoint on a free loopback port: fails the first ``fail_first`` attempts, then accepts."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503, fail_body: bytes = b"not now", delay: float = 0.0):
        self.fail_first, self.fail_status, self.fail_body, self.delay = fail_first, fail_status, fail_body, delay
        self.attempts = 0
        self.accepted: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        """Listen (again, on the same port once it had one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        receiver.accepted.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, answer = (receiver.fail_status, receiver.fail_body) if failing else (200, b'{"ok": true}')
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start`` again."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        """Where the receiver listens."""
        return f"http://127.0.0.1:{self.port}/hooks/tether"

    def events(self) -> list[dict]:
        """The CloudEvents accepted so far, in arrival order."""
        return [json.loads(body) for _headers, body in self.accepted]


@pytest.fixture
def receiver():
    """Makes receivers; stops them after the test."""
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        """A started receiver."""
        made.append(Receiver(**kwargs).start())
        return made[-1]

    yield make
    for each in made:
        each.stop()


@pytest.fixture
def dispatcher(app):
    """A dispatcher without jitter, driven by the test."""
    from server.integration.dispatcher import Dispatcher

    made = Dispatcher(app, rng=lambda: 0.0)
    yield made
    made.stop()


def deliver_all(dispatcher, clock, rounds: int = 200) -> None:
    """Send what is due; while something is still pending, move the fake clock to its next attempt."""
    for _ in range(rounds):
        dispatcher.drain()
        due = dispatcher.next_due()
        if due is None:
            return
        clock.now = max(clock.now, due)
    raise AssertionError("deliveries still pending")


def subscribe(api, token, url, events):
    """Subscribe and return the answer (with the secret)."""
    answer = api.as_(token).post("/api/v1/webhooks", json={"url": url, "events": events})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def deliveries(api, token, webhook_id, **filters):
    """The subscription's deliveries through the API."""
    query = "&".join(f"{k}={v}" for k, v in {"limit": 500, **filters}.items())
    answer = api.as_(token).get(f"/api/v1/webhooks/{webhook_id}/deliveries?{query}")
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


def outbox(app, after_id=0):
    """The outbox events after ``after_id``, in order."""
    from server.store.extensions import db
    from server.store.models import OutboxEvent

    with app.app_context():
        rows = (
            db.session.execute(select(OutboxEvent).where(OutboxEvent.id > after_id).order_by(OutboxEvent.id))
            .scalars()
            .all()
        )
        return [{"id": r.id, "event_id": r.event_id, "type": r.type, "therapy_id": r.therapy_id} for r in rows]


def hmac_signature(secret: str, headers: dict, body: bytes) -> str:
    """The Standard Webhooks signature computed by hand, to check the library's."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_every_event_arrives_once_in_order_and_signed_after_early_failures(
    api, world, app, clock, receiver, dispatcher
):
    endpoint = receiver(fail_first=3)
    hook = subscribe(api, world["integrator"], endpoint.url, ["therapy.*", "task.*", "message.received"])
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["therapy.*", "task.*", "message.received"]

    first, second = start(api, world["coord"], reference="PT-A"), start(api, world["coord"], reference="PT-B")
    enrol(api, world, first)
    deliver(api, world, first, payload={"dock": 3})
    complete_only_task(
        api,
        world["logistics"],
        first["id"],
        {"received_ok": True},
        signature={"password": PASSWORD, "meaning": "approval"},
    )
    enrol(api, world, second, eligible=False, patient_initials="CD")

    deliver_all(dispatcher, clock)

    wanted = [
        e for e in outbox(app) if e["type"].split(".")[0] in ("therapy", "task") or e["type"] == "message.received"
    ]
    assert len(wanted) >= 10
    ids = [headers["webhook-id"] for headers, _body in endpoint.accepted]
    assert Counter(ids) == Counter(e["event_id"] for e in wanted)  # every event once, nothing else
    for therapy in (first, second):
        arrived = [i for i in ids if i in {e["event_id"] for e in wanted if e["therapy_id"] == therapy["id"]}]
        assert arrived == [e["event_id"] for e in wanted if e["therapy_id"] == therapy["id"]]
    assert endpoint.attempts == len(wanted) + 3

    verifier = Webhook(hook["secret"])
    for headers, body in endpoint.accepted:
        assert headers["content-type"] == "application/cloudevents+json"
        event = verifier.verify(body, headers)
        assert headers["webhook-signature"] == hmac_signature(hook["secret"], headers, body)
        assert event["specversion"] == "1.0" and event["id"] == headers["webhook-id"]
        assert event["source"] == "urn:tether" and event["time"].endswith("Z")
        assert event["subject"] == event["data"]["therapy_id"]
        assert event["data"]["coi"] in (first["coi"], second["coi"])
    types = [e["type"] for e in endpoint.events() if e["subject"] == first["id"]]
    assert types[:2] == ["therapy.started", "task.ready"] and "message.received" in types

    listed = deliveries(api, world["integrator"], hook["id"])
    assert {d["status"] for d in listed} == {"delivered"} and len(listed) == len(wanted)
    assert sum(d["attempts"] for d in listed) == endpoint.attempts
    assert all(d["last_status_code"] == 200 and d["next_attempt_at"] is None for d in listed)


def test_an_endpoint_that_was_down_for_a_while_gets_everything_in_order(api, world, app, clock, receiver, dispatcher):
    endpoint = receiver()
    endpoint.stop()
    hook = subscribe(api, world["integrator"], endpoint.url, ["*"])
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)

    for _ in range(4):  # about four minutes of refused connections
        dispatcher.drain()
        clock.advance(minutes=1)
    pending = deliveries(api, world["integrator"], hook["id"], status="pending")
    assert pending and len(pending) == len(deliveries(api, world["integrator"], hook["id"]))
    [tried] = [d for d in pending if d["attempts"]]  # later events wait behind the therapy's first one
    assert tried["event_type"] == "therapy.started" and tried["attempts"] >= 3
    assert "Connection" in tried["last_error"] and tried["last_status_code"] is None

    endpoint.start()
    deliver_all(dispatcher, clock)
    expected = [e["event_id"] for e in outbox(app) if e["therapy_id"] == therapy["id"]]
    assert [headers["webhook-id"] for headers, _body in endpoint.accepted] == expected
    assert {d["status"] for d in deliveries(api, world["integrator"], hook["id"])} == {"delivered"}


def test_retries_back_off_for_over_an_hour_then_fail_and_redeliver_resends(
    api, world, app, clock, receiver, dispatcher
):
    endpoint = receiver(fail_first=10**6, fail_status=500, fail_body=b"x" * 5000)
    hook = subscribe(api, world["integrator"], endpoint.url, ["therapy.started"])
    therapy = start(api, world["coord"])
    began = clock.now
    attempts_seen = []
    for _ in range(50):
        dispatcher.drain()
        [delivery] = deliveries(api, world["integrator"], hook["id"])
        attempts_seen.append((delivery["attempts"], clock.now))
        if delivery["status"] == "failed":
            break
        clock.now = max(clock.now, dispatcher.next_due())
    assert delivery["status"] == "failed" and delivery["attempts"] == app.config["WEBHOOK_MAX_ATTEMPTS"] >= 8
    assert endpoint.attempts == delivery["attempts"]
    last_attempt_at = min(at for attempts, at in attempts_seen if attempts == delivery["attempts"])
    assert last_attempt_at - began >= timedelta(hours=1)
    assert delivery["last_status_code"] == 500 and len(delivery["response_excerpt"]) <= 200
    assert delivery["next_attempt_at"] is None
    failures = api.as_(world["auditor"]).get("/api/v1/audit?limit=500").get_json()["items"]
    assert [e["subject_id"] for e in failures if e["action"] == "webhook.delivery_failed"] == [delivery["id"]]

    endpoint.fail_first = endpoint.attempts  # the receiver is fixed
    again = api.as_(world["integrator"]).post(f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202 and again.get_json()["status"] == "pending"
    deliver_all(dispatcher, clock)
    [event] = endpoint.events()
    assert event["type"] == "therapy.started" and event["subject"] == therapy["id"]
    [delivery] = deliveries(api, world["integrator"], hook["id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    missing = api.as_(world["integrator"]).post(f"/api/v1/webhooks/{hook['id']}/deliveries/nope/redeliver")
    assert missing.status_code == 404


def test_default_retry_schedule_is_at_least_eight_attempts_over_an_hour(app):
    from server.integration.dispatcher import retry_delay

    config = app.config
    attempts = config["WEBHOOK_MAX_ATTEMPTS"]
    waits = [
        retry_delay(n, config["WEBHOOK_RETRY_BASE_SECONDS"], config["WEBHOOK_RETRY_CAP_SECONDS"], rng=lambda: 0.0)
        for n in range(1, attempts)
    ]
    assert attempts >= 8 and sum(waits, timedelta()) >= timedelta(hours=1)
    assert waits == sorted(waits) and waits[0] < timedelta(minutes=1)
    jittered = retry_delay(3, 30, 7200, rng=lambda: 0.999)
    assert timedelta(seconds=120) < jittered <= timedelta(seconds=150)


def test_a_slow_receiver_is_cut_off_by_the_timeout(api, world, app, clock, receiver):
    from server.integration.dispatcher import Dispatcher

    app.config["WEBHOOK_TIMEOUT"] = 0.5
    sender = Dispatcher(app, rng=lambda: 0.0)
    endpoint = receiver(delay=2.0)
    hook = subscribe(api, world["integrator"], endpoint.url, ["therapy.started"])
    start(api, world["coord"])
    began = time.monotonic()
    sender.drain()
    assert time.monotonic() - began < 1.9
    [delivery] = deliveries(api, world["integrator"], hook["id"])
    assert delivery["status"] == "pending" and "Timeout" in delivery["last_error"]
    endpoint.delay = 0.0
    deliver_all(sender, clock)
    sender.stop()
    assert deliveries(api, world["integrator"], hook["id"])[0]["status"] == "delivered"


def test_fan_out_by_pattern_and_site_only_for_events_after_subscribing(api, world, app):
    from server.access import accounts

    with app.app_context():
        accounts.add_user("mes-b", ["integrator"], ["SITE-B"], "MES of site B", PASSWORD, "test")
        scoped_token = accounts.issue_token("mes-b", "test", "test")
    before = start(api, world["coord"], reference="PT-0")
    mark = outbox(app)[-1]["id"]
    url = "https://receiver.example/hook"
    lifecycle = subscribe(api, world["integrator"], url, ["therapy.*"])
    completions = subscribe(api, world["integrator"], url, ["task.completed"])
    everything = subscribe(api, world["integrator"], url, ["*"])
    site_b = subscribe(api, scoped_token, url, ["*"])

    at_a, at_b = (
        start(api, world["coord"], reference="PT-A"),
        start(api, world["coordb"], site="SITE-B", reference="PT-B"),
    )
    enrol(api, world, at_a)
    complete_only_task(api, world["coordb"], at_b["id"], {"eligible": False, "patient_initials": "CD"})
    events = outbox(app, mark)
    by_id = {e["event_id"]: e for e in events}

    def seen(hook, token=world["integrator"]):
        """The event ids a subscription got deliveries for, in event order."""
        return sorted((d["event_id"] for d in deliveries(api, token, hook["id"])), key=lambda i: by_id[i]["id"])

    assert seen(everything) == [e["event_id"] for e in events]
    assert seen(lifecycle) == [e["event_id"] for e in events if e["type"].startswith("therapy.")]
    assert seen(completions) == [e["event_id"] for e in events if e["type"] == "task.completed"]
    assert seen(site_b, scoped_token) == [e["event_id"] for e in events if e["therapy_id"] == at_b["id"]]
    assert {"therapy.started", "therapy.completed", "task.ready", "task.completed"} <= {
        by_id[i]["type"] for i in seen(site_b, scoped_token)
    }
    assert before["id"] not in {by_id[i]["therapy_id"] for i in seen(everything)}


def test_webhook_urls_and_patterns_are_checked_and_roles_enforced(api, world):
    integrator = api.as_(world["integrator"])
    for url in [
        "ftp://files.example/x",
        "http://",
        "https://user:secret@hooks.example/x",
        "not a url",
        "http://hooks.example/x#part",
        "https://hooks.example:99999/",
        42,
        "http://hooks .example/",
    ]:
        answer = integrator.post("/api/v1/webhooks", json={"url": url, "events": ["*"]})
        assert answer.status_code == 422, url
        assert answer.get_json()["error"]["details"].get("field") == "url" or "url" in answer.get_json()["error"][
            "details"
        ].get("fields", {}), url
    for events in [[], ["therapy.**x"], ["Therapy.Started"], "therapy.*", [7]]:
        answer = integrator.post("/api/v1/webhooks", json={"url": "https://hooks.example/x", "events": events})
        assert answer.status_code == 422, events
    assert (
        api.as_(world["coord"])
        .post("/api/v1/webhooks", json={"url": "https://hooks.example/x", "events": ["*"]})
        .status_code
        == 403
    )
    assert integrator.get("/api/v1/webhooks").get_json()["items"] == []


def test_subscriptions_are_listed_to_their_owner_and_admin_and_can_be_deleted(api, world, app):
    from server.access import accounts

    with app.app_context():
        accounts.add_user("erp", ["integrator"], [], "ERP system", PASSWORD, "test")
        other = accounts.issue_token("erp", "test", "test")
    mine = subscribe(api, world["integrator"], "https://mes.example/hook", ["task.*"])
    theirs = subscribe(api, other, "https://erp.example/hook", ["therapy.*"])
    listed = api.as_(world["integrator"]).get("/api/v1/webhooks").get_json()["items"]
    assert [h["id"] for h in listed] == [mine["id"]] and "secret" not in listed[0]
    assert {h["id"] for h in api.as_(world["admin"]).get("/api/v1/webhooks").get_json()["items"]} == {
        mine["id"],
        theirs["id"],
    }
    assert api.as_(world["integrator"]).get(f"/api/v1/webhooks/{theirs['id']}").status_code == 404
    assert api.as_(world["integrator"]).get(f"/api/v1/webhooks/{theirs['id']}/deliveries").status_code == 404

    start(api, world["coord"])
    auth = {"Authorization": f"Bearer {world['integrator']}"}
    assert api.client.delete(f"/api/v1/webhooks/{mine['id']}", headers=auth).status_code == 204
    assert api.client.delete(f"/api/v1/webhooks/{mine['id']}", headers=auth).status_code == 404
    assert api.as_(world["integrator"]).get("/api/v1/webhooks").get_json()["items"] == []
    start(api, world["coord"], reference="PT-2")
    assert len(deliveries(api, other, theirs["id"])) == 2  # therapy.started twice; the deleted one got nothing
    actions = [e["action"] for e in api.as_(world["auditor"]).get("/api/v1/audit?limit=500").get_json()["items"]]
    assert actions.count("webhook.subscribed") == 2 and actions.count("webhook.unsubscribed") == 1


def test_two_dispatchers_never_send_one_delivery_twice(api, world, app, clock, receiver):
    from server.integration.dispatcher import Dispatcher, claim_due
    from server.store.extensions import db

    hook = subscribe(api, world["integrator"], "https://unused.example/hook", ["*"])
    therapies = [start(api, world["coord"], reference=f"PT-{n}") for n in range(12)]
    barrier = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]

    def claimer(slot: int) -> None:
        """Claim until nothing is left, as one server process would."""
        with app.app_context():
            barrier.wait()
            while True:
                got = claim_due(clock.now, 3, timedelta(seconds=40))
                db.session.remove()
                if not got:
                    return
                claimed[slot].extend(c.delivery_id for c in got)

    workers = [threading.Thread(target=claimer, args=(slot,)) for slot in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not set(claimed[0]) & set(claimed[1])
    heads = [d for d in deliveries(api, world["integrator"], hook["id"]) if d["event_type"] == "therapy.started"]
    assert sorted(claimed[0] + claimed[1]) == sorted(d["id"] for d in heads) and len(heads) == len(therapies)

    auth = {"Authorization": f"Bearer {world['integrator']}"}
    assert api.client.delete(f"/api/v1/webhooks/{hook['id']}", headers=auth).status_code == 204
    endpoint = receiver()
    second = subscribe(api, world["integrator"], endpoint.url, ["*"])
    for therapy in therapies[:6]:
        enrol(api, world, therapy, eligible=False)
    senders = [Dispatcher(app, rng=lambda: 0.0) for _ in range(2)]
    runners = [threading.Thread(target=sender.drain) for sender in senders]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=120)
    senders[0].drain()
    for sender in senders:
        sender.stop()
    ids = [headers["webhook-id"] for headers, _body in endpoint.accepted]
    expected = [d["event_id"] for d in deliveries(api, world["integrator"], second["id"])]
    assert len(expected) == 6 * 2 and Counter(ids) == Counter(expected) and endpoint.attempts == len(expected)


def test_the_docs_verification_snippets_accept_real_deliveries_and_refuse_altered_ones(
    api, world, clock, receiver, dispatcher
):
    from standardwebhooks.webhooks import WebhookVerificationError

    from ..conftest import ROOT

    documentation = (ROOT / "docs" / "integration.md").read_text()
    section = documentation[documentation.index("## 3. What arrives, and how to check it") :]
    section = section[: section.index("\n## ")]
    namespace: dict = {}
    for snippet in re.findall(r"```python\n(.*?)```", section, re.S):
        exec(snippet, namespace)  # noqa: S102 - the documentation's own code
    endpoint = receiver()
    hook = subscribe(api, world["integrator"], endpoint.url, ["therapy.started"])
    therapy = start(api, world["coord"])
    deliver_all(dispatcher, clock)
    [(headers, body)] = endpoint.accepted
    assert namespace["tether_event"](hook["secret"], headers, body)["subject"] == therapy["id"]
    assert namespace["signed_by_tether"](hook["secret"], headers, body) is True
    altered = body.replace(b"therapy.started", b"therapy.completed")
    assert namespace["signed_by_tether"](hook["secret"], headers, altered) is False
    with pytest.raises(WebhookVerificationError):
        namespace["tether_event"](hook["secret"], headers, altered)
    stale = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}
    assert namespace["signed_by_tether"](hook["secret"], stale, body) is False


def test_a_delivery_being_sent_is_not_redelivered_at_the_same_time(api, world, app, clock):
    from server.integration.dispatcher import claim_due

    hook = subscribe(api, world["integrator"], "http://127.0.0.1:9/unused", ["therapy.started"])
    start(api, world["coord"])
    with app.app_context():
        [claim] = claim_due(clock.now, 10, timedelta(seconds=70))  # another process is sending it
    [delivery] = deliveries(api, world["integrator"], hook["id"])
    assert delivery["status"] == "pending" and delivery["last_error"] == "sending" and delivery["attempts"] == 1
    path = f"/api/v1/webhooks/{hook['id']}/deliveries/{claim.delivery_id}/redeliver"
    busy = api.as_(world["integrator"]).post(path)
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "delivery_in_progress"
    clock.advance(seconds=71)  # the sender died: its lease ran out
    assert api.as_(world["integrator"]).post(path).status_code == 202
