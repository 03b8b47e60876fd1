"""The message broker: events published per second from the outbox to RabbitMQ, and messages taken per second
end to end (queue, engine step, commit, acknowledgement).

    python -m bench.broker [--therapies 300] [--events 5000] [--backend sqlite|postgresql]

Needs RabbitMQ: ``TETHER_BENCH_BROKER_URL``, or ``TETHER_TEST_BROKER_URL`` (``scripts/with-rabbitmq`` sets it, as
``make bench`` does); without one the figures are skipped. Each backend (SQLite, and PostgreSQL when a server is
configured; see bench/_common.py) gets a fresh database with a broker configured.

Publishing: ``--therapies`` therapies are started on a diagram that waits for two messages (``bench.overhead``'s
journey without user tasks), and more events are written to the outbox in bulk, spread over those therapies,
until ``--events`` events are pending. Then one publisher (``server.broker.publisher``, in this process, with
publisher confirms) publishes them all, timed; a queue bound to ``tether.events`` must then hold every event
exactly once, each therapy's in the order they were written. Reported: events published per second.

Taking messages: one ``courier.picked_up`` message per therapy (the body of ``POST /messages`` plus an id) is put
on ``tether.messages``; then one consumer (``server.broker.consumer``, in this process) takes them, timed from
its start until the last is acknowledged. Each therapy must then wait for its second message, and the
dead-letter queue must be empty. Reported: messages taken per second, each one a delivery to a therapy in its
own transaction (engine step, audit entries, outbox events, commit) before its acknowledgement.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections import defaultdict

from ._common import Figure, add_people, backends, fresh_database, make_app
from .overhead import MESSAGES, journey_diagram

PROCESS_KEY = "bench_broker"


def broker_url() -> str | None:
    """The RabbitMQ to benchmark against, if any."""
    return os.environ.get("TETHER_BENCH_BROKER_URL") or os.environ.get("TETHER_TEST_BROKER_URL")


def _queues(url: str, listen: str) -> None:
    import kombu

    from server.broker import DEAD_LETTER_QUEUE, MESSAGES_QUEUE
    from server.broker.publisher import connection, exchange

    with connection(url) as conn:
        channel = conn.channel()
        exchange()(channel).declare()
        for name in (MESSAGES_QUEUE, DEAD_LETTER_QUEUE):
            kombu.Queue(name, durable=True)(channel).declare()
            channel.queue_purge(name)
        kombu.Queue(listen, exchange=exchange(), routing_key="#", durable=False, auto_delete=False)(channel).declare()


def _drain(url: str, queue: str) -> list[dict]:
    """Every message of ``queue`` (its JSON bodies), emptying it."""
    import kombu

    from server.broker.publisher import connection

    out = []
    with connection(url) as conn:
        bound = kombu.Queue(queue)(conn.channel())
        while (message := bound.get(no_ack=True)) is not None:
            out.append(json.loads(message.body))
    return out


def run(backend: str, url: str, options) -> dict:
    """Seed, publish, take; the measured rates and what was found wrong."""
    import kombu
    from sqlalchemy import func, insert, select

    from server.broker import DEAD_LETTER_QUEUE, MESSAGES_QUEUE
    from server.broker.consumer import Consumer
    from server.broker.publisher import Publisher, connection
    from server.store.extensions import db
    from server.store.models import OutboxEvent, Therapy
    from server.workflow.definitions import deploy
    from server.workflow.therapies import start_therapy

    listen = f"bench.events.{uuid.uuid4().hex[:8]}"
    _queues(url, listen)
    result: dict = {"problems": []}
    with fresh_database(backend) as database_url:
        app = make_app(database_url, BROKER_URL=url, BROKER_USER="bench-integrator", BROKER_RETRY_SECONDS=0.5)
        add_people(app)
        with app.app_context():
            deploy(journey_diagram(0, PROCESS_KEY), {}, "bench")
            began = time.perf_counter()
            therapies = [
                start_therapy(PROCESS_KEY, None, "SITE-A", f"PT-{i:05d}", {}, "bench") for i in range(options.therapies)
            ]
            ids = [(t.id, t.coi) for t in therapies]
            print(f"{backend}: {len(ids)} therapies started in {time.perf_counter() - began:.1f} s", flush=True)
            written = db.session.execute(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.broker_state == "pending")
            ).scalar_one()
            extra = max(0, options.events - written)
            rows = [
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "bench.note",
                    "therapy_id": ids[n % len(ids)][0],
                    "data": {"n": n, "therapy_id": ids[n % len(ids)][0]},
                    "broker_state": "pending",
                }
                for n in range(extra)
            ]
            for start in range(0, len(rows), 1000):
                db.session.execute(insert(OutboxEvent), rows[start : start + 1000])
            db.session.commit()
            expected = defaultdict(list)
            for event_id, therapy_id in db.session.execute(
                select(OutboxEvent.event_id, OutboxEvent.therapy_id)
                .where(OutboxEvent.broker_state == "pending")
                .order_by(OutboxEvent.id)
            ):
                expected[therapy_id].append(event_id)
            pending = sum(len(v) for v in expected.values())
            db.session.remove()

        publisher = Publisher(app)
        with connection(url) as conn:
            began = time.perf_counter()
            published = publisher.publish_pending(kombu.Producer(conn.channel()))
            took = time.perf_counter() - began
        result["publish_rate"] = published / took
        print(f"{backend}: published {published:,} events in {took:.1f} s ({published / took:,.0f}/s)", flush=True)
        got = defaultdict(list)
        for event in _drain(url, listen):
            got[event.get("subject")].append(event["id"])
        if dict(got) != dict(expected):
            result["problems"].append("the exchange did not carry every event once, in order per therapy")

        with connection(url) as conn:
            producer = kombu.Producer(conn.channel())
            for n, (_therapy_id, coi) in enumerate(ids):
                body = {"id": f"bench-{n}", "name": MESSAGES[0], "coi": coi, "payload": {"courier": "Bench"}}
                producer.publish(json.dumps(body), exchange="", routing_key=MESSAGES_QUEUE, delivery_mode=2)
        consumer = Consumer(app)
        began = time.perf_counter()
        consumer.start()
        while consumer.taken + consumer.refused < len(ids) and time.perf_counter() - began < 600:
            time.sleep(0.05)
        took = time.perf_counter() - began
        consumer.stop()
        result["take_rate"] = consumer.taken / took
        print(
            f"{backend}: took {consumer.taken:,} messages in {took:.1f} s ({consumer.taken / took:,.0f}/s)", flush=True
        )
        with app.app_context():
            waits = db.session.execute(select(Therapy.waits)).scalars().all()
            advanced = sum(1 for w in waits if any(x.get("name") == MESSAGES[1] for x in w or []))
            db.session.remove()
            db.engine.dispose()
        if consumer.refused or advanced != len(ids):
            result["problems"].append(f"{consumer.refused} refused, {advanced} of {len(ids)} therapies moved on")
        if _drain(url, DEAD_LETTER_QUEUE):
            result["problems"].append("messages were dead-lettered")
        result["pending"] = pending
    with connection(url) as conn:
        conn.channel().queue_delete(listen)
    return result


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark with command-line options; print the details and return the headline figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__.split("\n")[0])
    parser.add_argument("--therapies", type=int, default=300, help="therapies, one message each (default 300)")
    parser.add_argument("--events", type=int, default=5000, help="events to publish (default 5000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), help="only this backend")
    options = parser.parse_args(argv if argv is not None else [])
    url = broker_url()
    if not url:
        print("broker figures skipped: set TETHER_BENCH_BROKER_URL or run under scripts/with-rabbitmq", flush=True)
        return [Figure("broker: events published and messages taken per second", None, "/s", note="no RabbitMQ")]
    figures = []
    for backend in backends(options.backend):
        result = run(backend, url, options)
        problems = result["problems"]
        figures += [
            Figure(
                f"broker: events published per second, outbox to RabbitMQ with confirms, {backend}",
                result["publish_rate"],
                "/s",
                note=f"{result['pending']:,} events of {options.therapies} therapies, one publisher",
            ),
            Figure(
                f"broker: messages taken per second, queue to commit to ack, {backend}",
                result["take_rate"],
                "/s",
                note=f"{options.therapies} messages, one consumer",
            ),
            Figure(
                f"broker: events lost, repeated or out of order, messages not taken, {backend}",
                len(problems),
                "",
                target="0",
                met=not problems,
                note="; ".join(problems),
            ),
        ]
    return figures


if __name__ == "__main__":
    import sys

    from ._common import table

    print(table(main(sys.argv[1:])))
