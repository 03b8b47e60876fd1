"""Publishing the outbox's events to the broker's exchange ``tether.events``, in order per therapy.

Each outbox event written while a broker is configured is ``pending``. The publisher claims pending events
with a lease (a compare-and-set on ``broker_lease_until``, so that of several server processes one publishes
a given event), publishes them with publisher confirms (the broker has taken the message once ``publish``
returns), and then marks them ``published``. An event is claimed only when no earlier event of the same
therapy is still pending, so a consumer bound to the exchange sees each therapy's events in the order they
happened. While the broker is unreachable the events stay pending and the publisher retries, waiting longer
each time (``TETHER_BROKER_RETRY_SECONDS``, doubled up to a minute).

Delivery is at least once: a process that stops between the broker's confirm and the mark publishes the event
again when its lease ends. Consumers tell repeats apart by the CloudEvent ``id`` (the AMQP ``message_id``).
The patient reference is withheld on the broker (``"patient_reference": null`` where an event has one): any
consumer of the exchange may read it, so it carries what nobody in particular may know.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import kombu
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from server.integration import outbox, webhooks
from server.integration.worker import Worker
from server.store.extensions import db
from server.store.models import OutboxEvent
from server.store.uow import rows_changed, unit_of_work

from . import EVENTS_EXCHANGE

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
MAX_WAIT_SECONDS = 60.0
CONTENT_TYPE = "application/cloudevents+json"


def exchange() -> kombu.Exchange:
    """The durable topic exchange the events go to."""
    return kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def connection(url: str) -> kombu.Connection:
    """A connection whose publishes wait for the broker's confirm."""
    return kombu.Connection(url, transport_options={"confirm_publish": True}, connect_timeout=5, heartbeat=0)


def claim(now: datetime, limit: int) -> list[int]:
    """Lease up to ``limit`` pending events that may go out now (the earliest pending one of each therapy, and
    events of no therapy), oldest first; their ids."""
    earlier = aliased(OutboxEvent)
    waiting_behind = (
        select(earlier.id)
        .where(
            earlier.broker_state == "pending",
            earlier.therapy_id == OutboxEvent.therapy_id,
            earlier.id < OutboxEvent.id,
        )
        .exists()
    )
    free = (OutboxEvent.broker_lease_until.is_(None)) | (OutboxEvent.broker_lease_until < now)
    with unit_of_work():
        candidates = db.session.execute(
            select(OutboxEvent.id)
            .where(OutboxEvent.broker_state == "pending", free, ~waiting_behind)
            .order_by(OutboxEvent.id)
            .limit(limit)
        ).scalars()
        claimed = []
        for event_id in list(candidates):
            taken = rows_changed(
                update(OutboxEvent)
                .where(OutboxEvent.id == event_id, OutboxEvent.broker_state == "pending", free)
                .values(broker_lease_until=now + LEASE)
            )
            if taken:
                claimed.append(event_id)
    return claimed


def message(row: OutboxEvent, source: str, audience=None) -> tuple[bytes, dict]:
    """The event as the broker carries it: the structured CloudEvent body and the AMQP properties.
    ``audience`` is the therapy's (``outbox.audiences``), which decides what is withheld."""
    body = webhooks.cloud_event_json(row, source, outbox.Reader.of((), ()).view(row.data or {}, audience))
    properties = {
        "content_type": CONTENT_TYPE,
        "content_encoding": "utf-8",
        "message_id": row.event_id,
        "type": row.type,
        "timestamp": int(row.created_at.timestamp()),
        "delivery_mode": 2,  # persistent
    }
    return body, properties


class Publisher(Worker):
    """Publishes this process's share of the pending events; ``start`` runs it in a thread, tests call
    ``publish_pending``."""

    thread_name = "tether-broker-publisher"

    def __init__(self, app: Flask, *, batch: int = 100):
        self.app = app
        self.batch = batch
        self.url = str(app.config["BROKER_URL"])
        self.source = str(app.config["EVENT_SOURCE"])
        self.retry = float(app.config.get("BROKER_RETRY_SECONDS", 5.0))
        self.connected = False
        super().__init__()

    def wake(self) -> None:
        """Ring the outbox's bell the loop waits on."""
        outbox.BROKER_BELL.set()

    def publish_pending(self, producer: kombu.Producer) -> int:
        """Publish every event that may go out now, round after round; how many were published."""
        published = 0
        while not self._stop.is_set():
            with self.app.app_context():
                claimed = claim(webhooks.now(), self.batch)
                if not claimed:
                    return published
                rows = list(
                    db.session.execute(
                        select(OutboxEvent).where(OutboxEvent.id.in_(claimed)).order_by(OutboxEvent.id)
                    ).scalars()
                )
                therapy_ids = sorted({row.therapy_id for row in rows if row.therapy_id})
                audience = outbox.audiences(db.session.connection(), therapy_ids) if therapy_ids else {}
                done: list[int] = []
                try:
                    for row in rows:
                        body, properties = message(row, self.source, audience.get(row.therapy_id or ""))
                        producer.publish(body, exchange=exchange(), routing_key=row.type, retry=False, **properties)
                        done.append(row.id)
                finally:  # what the broker confirmed is published; the rest goes back for the next try
                    self._mark_published(done)
                    self._release([event_id for event_id in claimed if event_id not in set(done)])
                published += len(done)
                db.session.remove()
        return published

    def _mark_published(self, event_ids: list[int]) -> None:
        if not event_ids:
            return
        with unit_of_work():
            rows_changed(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(event_ids), OutboxEvent.broker_state == "pending")
                .values(broker_state="published", broker_published_at=webhooks.now(), broker_lease_until=None)
            )

    def _release(self, event_ids: list[int]) -> None:
        """Give back the leases of events that were not published (the broker went away)."""
        if not event_ids:
            return
        with unit_of_work():
            rows_changed(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(event_ids), OutboxEvent.broker_state == "pending")
                .values(broker_lease_until=None)
            )

    def _loop(self) -> None:
        wait = self.retry
        while not self._stop.is_set():
            try:
                with connection(self.url) as conn:
                    conn.ensure_connection(max_retries=1)
                    producer = kombu.Producer(conn.channel(), exchange=exchange())
                    exchange()(producer.channel).declare()
                    self.connected, wait = True, self.retry
                    log.info("publishing events to %s", EVENTS_EXCHANGE)
                    while not self._stop.is_set():
                        self.publish_pending(producer)
                        outbox.BROKER_BELL.wait(1.0)
                        outbox.BROKER_BELL.clear()
            except Exception as exc:  # the broker is down or went away: the events wait in the outbox
                self.connected = False
                log.warning("broker unreachable for publishing (%s); trying again in %.0f s", exc, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, MAX_WAIT_SECONDS)
        self.connected = False
