"""The message broker (a real RabbitMQ node, started by scripts/with-rabbitmq): events published from the outbox
as CloudEvents in order per therapy, nothing lost while the broker is down, messages taken from tether.messages
once each, and the ones that cannot be taken dead-lettered with the reason."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import kombu
import pytest
import requests
from sqlalchemy import select, update

from server.broker import DEAD_LETTER_QUEUE, MESSAGES_QUEUE
from server.broker.consumer import Consumer
from server.broker.publisher import Publisher, connection, exchange
from server.store.extensions import db
from server.store.models import AuditEntry, BrokerMessage, OutboxEvent

from ..conftest import ROOT
from ..support.journeys import deliver, enrol, start
from .conftest import PASSWORD

BROKER_URL = os.environ.get("TETHER_TEST_BROKER_URL")


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl against the throwaway node."""
    env = {**os.environ, "HOME": os.environ["TETHER_TEST_RABBITMQ_HOME"]}
    node = os.environ["TETHER_TEST_RABBITMQ_NODE"]
    subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", node, *args], env=env, check=True, capture_output=True)


def _wait_until_started(seconds: float = 180) -> None:
    """Wait until scripts/with-rabbitmq says the node it started (while the tests began) answers; fail with the
    node's output when it says the node never did (nothing to wait for with a broker of one's own)."""
    ready = os.environ.get("TETHER_TEST_RABBITMQ_READY")
    if not ready:
        return
    deadline = time.monotonic() + seconds
    while not os.path.exists(ready):
        if time.monotonic() > deadline:
            pytest.fail(f"RabbitMQ did not start within {seconds:.0f} s ({ready} was not written)")
        time.sleep(0.2)
    said = Path(ready).read_text()
    if not said.startswith("ready"):
        pytest.fail(f"RabbitMQ did not start:\n{said[-5000:]}")


@pytest.fixture
def broker_node():
    """The throwaway node to oneself: test processes running side by side take turns (a file lock), since the
    tests share its queues and one of them restarts it."""
    if not BROKER_URL:
        pytest.skip("needs RabbitMQ: run under scripts/with-rabbitmq (make test does), or set TETHER_TEST_BROKER_URL")
    _wait_until_started()
    lock_path = Path(os.environ.get("TETHER_TEST_RABBITMQ_HOME") or tempfile.gettempdir()) / "tests.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield BROKER_URL
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def broker(app, world, broker_node):
    """The app publishing to the broker, a user ``broker`` (integrator) to take messages as, empty queues, and a
    queue bound to every event of the exchange to read what was published."""
    from server.access import accounts

    app.config.update(BROKER_URL=BROKER_URL, BROKER_USER="broker", BROKER_RETRY_SECONDS=0.2)
    with app.app_context():
        accounts.add_user("broker", ["integrator"], [], "Broker Link", PASSWORD, "test")
        # What was written before the broker was configured (the world's deployments) is not for it.
        db.session.execute(update(OutboxEvent).values(broker_state=None))
        db.session.commit()
    listen = f"test.events.{uuid.uuid4().hex[:8]}"
    with connection(BROKER_URL) as conn:
        channel = conn.channel()
        exchange()(channel).declare()
        for name in (MESSAGES_QUEUE, DEAD_LETTER_QUEUE):
            kombu.Queue(name, durable=True)(channel).declare()
            channel.queue_purge(name)
        kombu.Queue(listen, exchange=exchange(), routing_key="#", auto_delete=False)(channel).declare()
    links: list = []
    yield {"listen": listen, "links": links}
    for link in links:
        link.stop()
    with connection(BROKER_URL) as conn:
        conn.channel().queue_delete(listen)


def published(queue: str, expect: int, seconds: float = 15) -> list[kombu.Message]:
    """Up to ``expect`` messages from ``queue`` (acknowledged, raw bodies), waiting up to ``seconds`` for them."""
    out: list = []
    deadline = time.monotonic() + seconds
    with connection(BROKER_URL) as conn:
        bound = kombu.Queue(queue, durable=True)(conn.channel())
        while len(out) < expect and time.monotonic() < deadline:
            message = bound.get(no_ack=True)
            if message is None:
                time.sleep(0.1)
            else:
                out.append(message)
    return out


def send(body, *, raw: bytes | None = None) -> None:
    """Put one message on tether.messages as an integrator's system would."""
    with connection(BROKER_URL) as conn:
        producer = kombu.Producer(conn.channel())
        producer.publish(
            raw if raw is not None else json.dumps(body).encode(),
            exchange="",
            routing_key=MESSAGES_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def wait_for(condition, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_events_go_to_the_exchange_as_cloud_events_in_order_per_therapy(app, api, world, broker):
    first = start(api, world["coord"])
    second = start(api, world["coord"])
    enrol(api, world, first, patient_initials="PT-1")  # the form records the patient reference (PT-1)
    enrol(api, world, second)
    with app.app_context():
        written = (
            db.session.execute(
                select(OutboxEvent).where(OutboxEvent.broker_state.is_not(None)).order_by(OutboxEvent.id)
            )
            .scalars()
            .all()
        )
        assert len(written) >= 6 and {row.broker_state for row in written} == {"pending"}
        expected = [(row.event_id, row.type, row.therapy_id) for row in written]
    publisher = Publisher(app)
    with connection(BROKER_URL) as conn:
        assert publisher.publish_pending(kombu.Producer(conn.channel())) == len(expected)
    messages = published(broker["listen"], len(expected))
    events = [json.loads(m.body) for m in messages]
    for therapy in (first["id"], second["id"]):
        assert [e["id"] for e in events if e.get("subject") == therapy] == [
            event_id for event_id, _type, of in expected if of == therapy
        ]
    assert sorted(e["id"] for e in events) == sorted(event_id for event_id, _type, _of in expected)
    started = next(m for m in messages if json.loads(m.body)["type"] == "therapy.started")
    assert started.delivery_info["routing_key"] == "therapy.started"
    assert started.properties["message_id"] == json.loads(started.body)["id"]
    assert started.content_type == "application/cloudevents+json"
    body = json.loads(started.body)
    assert body["specversion"] == "1.0" and body["source"] and body["data"]["coi"] == first["coi"]
    reference = api.as_(world["coord"]).get(f"/api/v1/therapies/{first['id']}").get_json()["patient"]["reference"]
    with app.app_context():
        knowing = [r.event_id for r in written if reference in json.dumps(db.session.get_one(OutboxEvent, r.id).data)]
    assert knowing, "some events name the patient in the outbox"
    for m in messages:
        if json.loads(m.body)["id"] in knowing:
            assert reference not in json.dumps(json.loads(m.body)), "the broker carries what nobody may know"
    with app.app_context():
        states = db.session.execute(select(OutboxEvent.broker_state)).scalars().all()
        assert set(states) == {"published", None}
        assert states.count("published") == len(expected)


def test_nothing_is_lost_while_the_broker_is_down(app, api, world, broker):
    publisher = Publisher(app)
    broker["links"].append(publisher)
    rabbitmqctl("stop_app")
    try:
        publisher.start()
        therapy = start(api, world["coord"])
        enrol(api, world, therapy)
        time.sleep(1.0)
        assert not publisher.connected
        with app.app_context():
            waiting = db.session.execute(select(OutboxEvent.event_id).where(OutboxEvent.broker_state == "pending"))
            pending = sorted(waiting.scalars())
        assert pending
    finally:
        rabbitmqctl("start_app")
    messages = published(broker["listen"], len(pending), seconds=30)
    assert sorted(json.loads(m.body)["id"] for m in messages) == pending
    assert wait_for(lambda: publisher.connected)


def test_a_message_from_the_queue_is_taken_once_however_often_it_comes(app, api, world, broker):
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)  # waits for shipment.delivered
    consumer = Consumer(app)
    broker["links"].append(consumer)
    consumer.start()
    body = {"id": "mes-0001", "name": "shipment.delivered", "coi": therapy["coi"], "payload": {"carrier": "ColdChain"}}
    send(body)
    send(body)  # the sender's retry after a lost acknowledgement
    assert wait_for(lambda: consumer.taken == 2)
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [t["activity_id"] for t in detail["open_tasks"]] == ["Task_Receive"]
    with app.app_context():
        received = db.session.execute(
            select(AuditEntry).where(AuditEntry.therapy_id == therapy["id"], AuditEntry.action == "message.received")
        ).scalars()
        assert [(e.actor, e.data["name"]) for e in received] == [("broker", "shipment.delivered")]
        record = db.session.get_one(BrokerMessage, "mes-0001")
        assert (record.outcome, record.therapy_id) == ("delivered", therapy["id"])
    assert published(DEAD_LETTER_QUEUE, 1, seconds=1) == []


@pytest.mark.parametrize(
    ("body", "raw", "code"),
    [
        (None, b"not json at all", "malformed_json"),
        ({"name": "shipment.delivered", "coi": "X"}, None, "invalid_request"),  # no id
        ({"id": "m-2", "name": "shipment.delivered", "therapy": "x"}, None, "invalid_request"),  # unknown field
        ({"id": "m-3", "name": "qc.results", "coi": "<coi>", "payload": {}}, None, "not_waiting"),
        ({"id": "m-4", "name": "shipment.delivered", "therapy_id": "no-such-therapy"}, None, "not_found"),
        (
            {"id": "m-5", "name": "shipment.delivered", "coi": "<coi>", "payload": {"note": "a\u0000b"}},
            None,
            "invalid_value",
        ),
    ],
)
def test_a_message_that_cannot_be_taken_is_dead_lettered_with_the_reason(app, api, world, broker, body, raw, code):
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)
    if body is not None:
        body = json.loads(json.dumps(body).replace("<coi>", therapy["coi"]))
    consumer = Consumer(app)
    broker["links"].append(consumer)
    consumer.start()
    send(body, raw=raw)
    assert wait_for(lambda: consumer.refused == 1)
    [dead] = published(DEAD_LETTER_QUEUE, 1)
    assert dead.headers["x-tether-code"] == code and dead.headers["x-tether-reason"]
    sent = raw if raw is not None else json.dumps(body).encode()
    assert (dead.body if isinstance(dead.body, str) else dead.body.decode()) == sent.decode()
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["waiting_for"][0]["name"] == "shipment.delivered", "nothing changed"
    assert published(MESSAGES_QUEUE, 1, seconds=0.5) == [], "acknowledged, not put back"


def test_messages_are_taken_again_after_the_broker_restarts(app, api, world, broker):
    therapies = [start(api, world["coord"]) for _ in range(2)]
    for therapy in therapies:
        enrol(api, world, therapy)
    consumer = Consumer(app)
    broker["links"].append(consumer)
    consumer.start()
    assert wait_for(lambda: consumer.connected)
    rabbitmqctl("stop_app")
    rabbitmqctl("start_app")
    for n, therapy in enumerate(therapies):
        send({"id": f"after-restart-{n}", "name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {}})
    assert wait_for(lambda: consumer.taken == 2, seconds=40)
    for therapy in therapies:
        detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
        assert [t["activity_id"] for t in detail["open_tasks"]] == ["Task_Receive"]


def test_without_a_broker_nothing_is_marked_for_it(app, api, world):
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)
    deliver(api, world, therapy)
    with app.app_context():
        assert set(db.session.execute(select(OutboxEvent.broker_state)).scalars()) == {None}


@pytest.mark.slow
def test_a_served_tether_publishes_its_events_and_takes_messages_from_the_queue(tmp_path, broker_node):
    """A real ``tether serve`` with TETHER_BROKER_URL: a therapy started over HTTP is announced on the exchange,
    and a courier's message put on tether.messages moves it on."""
    from server import create_app
    from server.access import accounts

    from ..support.served import Server, prepare_served, served_environment

    env = served_environment(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", (ROOT / "tests/fixtures/mini.bpmn").read_bytes()
    )
    token, _ids = prepare_served(env)
    app = create_app({"DATABASE_URL": env["TETHER_DATABASE_URL"], "SCHEDULER": False, "SECRET_KEY": "t"})
    with app.app_context():
        accounts.add_user("broker", ["integrator"], [], "Broker Link", PASSWORD, "test")
        db.session.remove()
        db.engine.dispose()
    listen = f"test.served.{uuid.uuid4().hex[:8]}"
    with connection(BROKER_URL) as conn:
        channel = conn.channel()
        exchange()(channel).declare()
        kombu.Queue(listen, exchange=exchange(), routing_key="therapy.*")(channel).declare()
        for name in (MESSAGES_QUEUE, DEAD_LETTER_QUEUE):
            kombu.Queue(name, durable=True)(channel).declare()
            channel.queue_purge(name)
    server = Server({**env, "TETHER_BROKER_URL": BROKER_URL, "TETHER_BROKER_RETRY_SECONDS": "0.5"}, tmp_path, "broker")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        server.wait_healthy()
        assert wait_for(lambda: requests.get(f"{server.base}/health", timeout=5).json()["broker"] == "connected")
        body = {"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-7"}}
        therapy = requests.post(f"{server.base}/therapies", json=body, headers=headers, timeout=10).json()
        [started] = published(listen, 1)
        assert json.loads(started.body)["type"] == "therapy.started"
        assert json.loads(started.body)["subject"] == therapy["id"]
        [task] = requests.get(f"{server.base}/tasks?therapy_id={therapy['id']}", headers=headers, timeout=10).json()[
            "items"
        ]
        done = requests.post(
            f"{server.base}/tasks/{task['id']}/complete",
            json={"data": {"eligible": True, "patient_initials": "AB"}},
            headers=headers,
            timeout=10,
        )
        assert done.status_code == 200, done.text
        send({"id": "courier-1", "name": "shipment.delivered", "coi": therapy["coi"], "payload": {}})

        def received() -> bool:
            detail = requests.get(f"{server.base}/therapies/{therapy['id']}", headers=headers, timeout=10).json()
            return [t["activity_id"] for t in detail["open_tasks"]] == ["Task_Receive"]

        assert wait_for(received, seconds=20), server.log_path.read_text()[-2000:]
    finally:
        server.stop()
        with connection(BROKER_URL) as conn:
            conn.channel().queue_delete(listen)


def test_a_courier_tracking_message_from_the_queue_reaches_its_shipment(app, api, world, broker, clock):
    """``shipment.position`` with a shipment_id is taken by the shipment, as over ``POST /messages``; an unknown
    shipment is dead-lettered as not found."""
    therapy = start(api, world["coord"])
    created = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/shipments",
        json={"carrier": "ColdChain", "tracking_number": "CC-Q1", "from_party": "SITE-A", "to_party": "MFG-1"},
    )
    assert created.status_code == 201, created.get_json()
    shipment = created.get_json()
    consumer = Consumer(app)
    broker["links"].append(consumer)
    consumer.start()
    eta = (clock() + timedelta(hours=6)).isoformat().replace("+00:00", "Z")
    payload = {"shipment_id": shipment["id"], "latitude": 50.1, "longitude": 8.7, "expected_arrival": eta}
    send({"id": "track-1", "name": "shipment.position", "therapy_id": therapy["id"], "payload": payload})
    send({"id": "track-2", "name": "shipment.position", "payload": {**payload, "shipment_id": "no-such-shipment"}})
    assert wait_for(lambda: consumer.taken == 1 and consumer.refused == 1)
    detail = api.as_(world["coord"]).get(f"/api/v1/shipments/{shipment['id']}").get_json()
    assert [(p["latitude"], p["recorded_by"]) for p in detail["positions"]] == [(50.1, "broker")]
    assert detail["expected_arrival"] == eta
    [dead] = published(DEAD_LETTER_QUEUE, 1)
    assert dead.headers["x-tether-code"] == "not_found"
    with app.app_context():
        assert db.session.get_one(BrokerMessage, "track-1").therapy_id == therapy["id"]
