"""The message broker link (RabbitMQ over AMQP 0-9-1, through kombu): an entry point beside the API and the pages.

With ``TETHER_BROKER_URL`` set, every server process runs two threads (``start``):

- the publisher (``publisher.py``) sends every outbox event, the same ones webhooks carry, to the durable topic
  exchange ``tether.events`` with the event type as routing key, as a CloudEvent in structured mode (the body is
  the CloudEvent JSON, content type ``application/cloudevents+json``). It works from the transactional outbox,
  so nothing is lost while the broker is down, and it publishes a therapy's events one after the other, in order.
- the consumer (``consumer.py``) takes messages from the durable queue ``tether.messages`` (the body of
  ``POST /api/v1/messages`` plus ``"id"``, an idempotency key), runs them as the configured user
  (``TETHER_BROKER_USER``) through the same use cases as the API, and acknowledges each only after its
  transaction committed; a message that cannot be taken goes to ``tether.messages.dead`` with the reason.

Without ``TETHER_BROKER_URL`` nothing of this runs and the outbox marks nothing for the broker.
"""

from __future__ import annotations

from flask import Flask

EVENTS_EXCHANGE = "tether.events"
MESSAGES_QUEUE = "tether.messages"
DEAD_LETTER_QUEUE = "tether.messages.dead"


def start(app: Flask) -> None:
    """Start the publisher (and, unless ``TETHER_BROKER_CONSUME`` is off, the consumer) for ``app``."""
    from .consumer import Consumer
    from .publisher import Publisher

    publisher = Publisher(app)
    app.extensions["tether_broker_publisher"] = publisher
    publisher.start()
    if app.config.get("BROKER_CONSUME", True):
        consumer = Consumer(app)
        app.extensions["tether_broker_consumer"] = consumer
        consumer.start()


def stop(app: Flask) -> None:
    """Stop what ``start`` started (tests; a server process stops with its threads)."""
    for name in ("tether_broker_consumer", "tether_broker_publisher"):
        link = app.extensions.pop(name, None)
        if link is not None:
            link.stop()
