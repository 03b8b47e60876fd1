"""Taking messages from the broker's queue ``tether.messages``, each exactly as ``POST /api/v1/messages`` takes it.

A message's body is a JSON object: the body of ``POST /api/v1/messages`` (``name`` and ``therapy_id`` or
``coi`` and ``payload``; or, to start a therapy, ``site``, ``patient`` and optionally ``process_key``) plus
``"id"``, the sender's idempotency key. It runs as the user ``TETHER_BROKER_USER`` (their roles and sites
decide, as for a token), and is acknowledged only once its transaction has committed; the id is recorded in
that same transaction (``broker_message``), so a message the broker delivers again is acknowledged without
being taken twice.

A message that cannot be taken (not JSON, no id, a field the API would refuse, a therapy that does not wait
for it, a user without the right) is published to the queue ``tether.messages.dead`` with the reason in its
headers (``x-tether-code``, ``x-tether-status``, ``x-tether-reason``), recorded as refused, and acknowledged:
nothing is lost silently. A database that is busy or unreachable is not the message's fault: the message is
put back on the queue and taken again shortly.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import kombu
from flask import Flask
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from engine.values import ValueRejected
from server.api.messages import take_message
from server.api.schemas import MessageSchema
from server.errors import ApiError
from server.inputs import loads_request_body
from server.integration.worker import Worker
from server.store.extensions import db
from server.store.models import BrokerMessage, User
from server.store.uow import unit_of_work

from . import DEAD_LETTER_QUEUE, MESSAGES_QUEUE
from .publisher import MAX_WAIT_SECONDS

log = logging.getLogger(__name__)
MAX_ID_LENGTH = 200
OUTCOMES = {200: "delivered", 201: "started", 202: "held"}


class Refused(Exception):
    """A message that cannot be taken, with the API's code, status and words for why."""

    def __init__(self, code: str, status: int, reason: str, details: Any = None):
        super().__init__(reason)
        self.code, self.status, self.reason, self.details = code, status, reason, details


class Retry(Exception):
    """Not the message's fault (a busy or unreachable database): put it back and take it again later."""


def queues() -> tuple[kombu.Queue, kombu.Queue]:
    """The durable queue the messages come from and the one the refused ones go to."""
    return kombu.Queue(MESSAGES_QUEUE, durable=True), kombu.Queue(DEAD_LETTER_QUEUE, durable=True)


def parse(raw: bytes | str) -> tuple[str, dict]:
    """The message's id and its body as ``POST /messages`` would read it; ``Refused`` saying why not."""
    try:
        body = loads_request_body(raw)  # the checks every API body gets: no NUL, NaN, lone surrogate, 64-bit ints
    except ValueRejected as exc:
        raise Refused(exc.code, 422, exc.message, exc.as_details()) from None
    except (ValueError, UnicodeDecodeError):
        raise Refused("malformed_json", 400, "The message body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise Refused("malformed_json", 400, "The message body must be a JSON object.")
    message_id = body.pop("id", None)
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID_LENGTH:
        raise Refused(
            "invalid_request",
            422,
            f"The message needs 'id', an idempotency key of 1 to {MAX_ID_LENGTH} characters.",
            {"fields": {"id": ["Missing or not a string of 1 to 200 characters."]}},
        )
    try:
        return message_id, MessageSchema().load(body)
    except ValidationError as exc:
        fields = {"fields": exc.messages}
        raise Refused("invalid_request", 422, "The message is not valid; see the fields.", fields) from None


def take(app: Flask, raw: bytes | str) -> tuple[str, str, dict]:
    """Take one message in its own transaction: ``(message id, outcome, answer)``; an id taken before is not
    taken again (outcome ``duplicate``). Raises ``Refused`` (recorded when it has an id) or ``Retry``."""
    message_id = None
    with app.app_context():
        try:
            message_id, body = parse(raw)
            if db.session.get(BrokerMessage, message_id) is not None:
                return message_id, "duplicate", {}
            user = _user(app)
            with unit_of_work():
                record = BrokerMessage(message_id=message_id, outcome="delivered", name=body["name"])
                db.session.add(record)
                answer, status = take_message(body, user)
                record.outcome, record.therapy_id = OUTCOMES.get(status, "delivered"), answer.get("therapy_id")
            return message_id, record.outcome, answer
        except ApiError as exc:
            db.session.rollback()
            if exc.status == 409 and exc.code == "busy":
                raise Retry(exc.message) from exc
            refused = Refused(exc.code, exc.status, exc.message, exc.details)
        except Refused as exc:
            db.session.rollback()
            refused = exc
        except OperationalError as exc:
            db.session.rollback()
            raise Retry(str(exc.orig)) from exc
        finally:
            db.session.remove()
        if message_id is not None:
            _record_refusal(message_id, raw, refused)
        raise refused


def _user(app: Flask) -> User:
    """The active user whose rights apply to broker messages; ``Refused`` naming the setting when there is none."""
    name = str(app.config.get("BROKER_USER") or "")
    user = db.session.execute(select(User).where(User.username == name, User.active.is_(True))).scalar_one_or_none()
    if user is None:
        raise Refused(
            "broker_user_missing",
            403,
            f"No active user '{name}' takes broker messages: add one with the integrator role "
            "(tether user add) or set TETHER_BROKER_USER.",
        )
    return user


def _record_refusal(message_id: str, raw: bytes | str, refused: Refused) -> None:
    """Remember a refused id (a redelivery of it is refused again without being run)."""
    try:
        with unit_of_work():
            if db.session.get(BrokerMessage, message_id) is None:
                db.session.add(
                    BrokerMessage(
                        message_id=message_id,
                        outcome="refused",
                        detail={"code": refused.code, "status": refused.status, "reason": refused.reason},
                    )
                )
    except Exception:  # the dead letter still says why; the record is a convenience
        db.session.rollback()
        log.exception("could not record the refused broker message %s", message_id)
    finally:
        db.session.remove()


class Consumer(Worker):
    """Takes this process's share of ``tether.messages``; ``start`` runs it in a thread, tests call ``handle``."""

    thread_name = "tether-broker-consumer"

    def __init__(self, app: Flask):
        self.app = app
        self.url = str(app.config["BROKER_URL"])
        self.retry = float(app.config.get("BROKER_RETRY_SECONDS", 5.0))
        self.connected = False
        self.taken = 0
        self.refused = 0
        super().__init__()

    def handle(self, message: kombu.Message, producer: kombu.Producer) -> None:
        """Take one delivered message (its raw body, whatever its content type says) and acknowledge it,
        dead-letter it, or put it back."""
        raw = message.body
        try:
            message_id, outcome, _answer = take(self.app, raw)
        except Retry as exc:
            log.warning("broker message put back: %s", exc)
            time.sleep(0.5)
            message.requeue()
            return
        except Refused as refused:
            self._dead_letter(producer, message, refused)
            message.ack()
            self.refused += 1
            return
        log.info("broker message %s: %s", message_id, outcome)
        message.ack()
        self.taken += 1

    def _on_message(self, producer: kombu.Producer, message: kombu.Message) -> None:
        self.handle(message, producer)

    def _missing_user(self) -> str | None:
        """Why no message can be taken yet (no such active user), or None."""
        with self.app.app_context():
            try:
                _user(self.app)
            except Refused as refused:
                return refused.reason
            except Exception as exc:  # the database is not there yet: try the broker anyway, messages will wait
                log.warning("could not look the broker user up: %s", exc)
            finally:
                db.session.remove()
        return None

    def _dead_letter(self, producer: kombu.Producer, message: kombu.Message, refused: Refused) -> None:
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-tether-code": refused.code,
                "x-tether-status": refused.status,
                "x-tether-reason": refused.reason,
                "x-tether-details": json.dumps(refused.details, default=str) if refused.details else "",
            }
        )
        producer.publish(
            message.body,
            exchange="",
            routing_key=DEAD_LETTER_QUEUE,
            headers=headers,
            content_type=message.content_type or "application/json",
            content_encoding=message.content_encoding or "utf-8",
            delivery_mode=2,
            retry=False,
        )
        log.warning("broker message dead-lettered (%s): %s", refused.code, refused.reason)

    def _loop(self) -> None:
        wait = self.retry
        while not self._stop.is_set():
            missing = self._missing_user()
            if missing:
                log.error("%s Broker messages wait in %s meanwhile.", missing, MESSAGES_QUEUE)
                self._stop.wait(wait)
                wait = min(wait * 2, MAX_WAIT_SECONDS)
                continue
            try:
                with kombu.Connection(
                    self.url, transport_options={"confirm_publish": True}, connect_timeout=5, heartbeat=0
                ) as conn:
                    conn.ensure_connection(max_retries=1)
                    channel = conn.channel()
                    incoming, dead = queues()
                    incoming(channel).declare()
                    dead(channel).declare()
                    channel.basic_qos(prefetch_size=0, prefetch_count=10, a_global=False)
                    producer = kombu.Producer(conn.channel())
                    with kombu.Consumer(
                        channel,
                        queues=[incoming],
                        on_message=functools.partial(self._on_message, producer),
                        no_ack=False,
                    ):
                        self.connected, wait = True, self.retry
                        log.info("taking messages from %s", MESSAGES_QUEUE)
                        while not self._stop.is_set():
                            try:
                                conn.drain_events(timeout=1.0)
                            except TimeoutError:
                                conn.heartbeat_check()
            except Exception as exc:  # the broker is down or went away: messages wait in its queue
                self.connected = False
                log.warning("broker unreachable for messages (%s); trying again in %.0f s", exc, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, MAX_WAIT_SECONDS)
        self.connected = False
