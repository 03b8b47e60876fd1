"""The webhook dispatcher: claims due deliveries, posts them signed, and schedules retries.

Claiming is a compare-and-set on the delivery row: ``attempts`` goes up by one and ``next_attempt_at``
moves to the end of a lease (the timeout plus a margin), but only if both are still what the claimer
read. On PostgreSQL the candidates are read with ``SELECT ... FOR UPDATE SKIP LOCKED`` so that several
server processes take disjoint batches; on SQLite writers queue behind ``BEGIN IMMEDIATE``. Either way
one delivery is never sent by two processes at once, and a process that dies mid-send only delays its
delivery until the lease runs out.

The loop also chains audit entries that waited in the audit spool for a busy database (``audit.replay_spool``).

Destinations: redirects are never followed, and unless ``TETHER_WEBHOOK_ALLOW_PRIVATE`` each attempt first
checks that the URL's host resolves to public addresses only and then that the connection reached one.

Order: a delivery is due only when no earlier delivery of the same therapy to the same subscription is
still pending, so a receiver sees each therapy's events in the order they happened.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from flask import Flask
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import aliased
from standardwebhooks.webhooks import Webhook

from server.integration import webhooks
from server.integration.outbound import Destinations, guarded_session
from server.integration.webhooks import SENDING, bell, delivery_json, now
from server.integration.worker import Worker
from server.store import audit
from server.store.extensions import db
from server.store.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from server.store.uow import rows_changed, unit_of_work

log = logging.getLogger(__name__)
EXCERPT_CHARS = 200
LEASE_MARGIN_SECONDS = 60  # a send is bounded per socket operation by the timeout, not in total
USER_AGENT = "Tether-Webhooks/1.0"


@dataclass(frozen=True)
class Claim:
    """A delivery this process may send: its id, the attempt number and the lease it holds."""

    delivery_id: str
    attempt: int
    lease_until: datetime


@dataclass(frozen=True)
class Response:
    """What one attempt got back: a status code (None when no answer) and a short excerpt or error."""

    status_code: int | None
    excerpt: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the receiver accepted the event (any 2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempt: int, base: float, cap: float, rng=random.random) -> timedelta:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``, capped, plus 0-25 % jitter."""
    seconds = min(cap, base * 2 ** max(0, attempt - 1))
    return timedelta(seconds=seconds * (1 + 0.25 * rng()))


def _sendable(*columns):
    """A query for pending deliveries of active subscriptions that no earlier one of their therapy holds back."""
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        earlier.subscription_id == WebhookDelivery.subscription_id,
        earlier.therapy_id == WebhookDelivery.therapy_id,
        earlier.status == "pending",
        earlier.outbox_event_id < WebhookDelivery.outbox_event_id,
    )
    return (
        select(*columns)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookDelivery.status == "pending", WebhookSubscription.active.is_(True), ~blocked)
    )


def claim_due(moment: datetime, limit: int, lease: timedelta) -> list[Claim]:
    """Claim up to ``limit`` due deliveries, oldest event first, at most one per (subscription, therapy)."""
    query = (
        _sendable(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.next_attempt_at <= moment)
        .order_by(WebhookDelivery.outbox_event_id)
        .limit(limit)
    )
    claims = []
    with unit_of_work():
        if db.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        for delivery_id, attempts, due in db.session.execute(query).all():
            lease_until = moment + lease
            taken = rows_changed(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.attempts == attempts,
                    WebhookDelivery.next_attempt_at == due,
                )
                .values(attempts=attempts + 1, next_attempt_at=lease_until, last_error=SENDING)
                .execution_options(synchronize_session=False)
            )
            if taken == 1:
                claims.append(Claim(delivery_id, attempts + 1, lease_until))
    return claims


def signed_request(row: OutboxEvent, body: bytes, secret: str, sent_at: datetime) -> tuple[dict[str, str], bytes]:
    """The headers and body of one delivery of ``row``: ``body`` (its CloudEvents structured JSON), signed as
    Standard Webhooks says."""
    timestamp = datetime.fromtimestamp(int(sent_at.timestamp()), tz=UTC)
    signature = Webhook(secret).sign(row.event_id, timestamp, body.decode())
    headers = {
        "content-type": "application/cloudevents+json",
        "user-agent": USER_AGENT,
        "webhook-id": row.event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }
    return headers, body


def post(url: str, headers: dict[str, str], body: bytes, timeout: float, *, allow_private: bool = False) -> Response:
    """POST ``body``; redirects are not followed, and only an excerpt of the answer is read.

    Unless ``allow_private``, the URL's host must resolve to public addresses only, and the connection is
    dropped when the address it reached is not public: nothing is sent to loopback, private, link-local or
    metadata addresses, also when DNS changed since the subscription was made.
    """
    try:
        destinations = Destinations(anywhere=allow_private, purpose="webhooks")
        destinations.check_url(url)
        with guarded_session(destinations) as session:
            with session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            ) as answer:
                raw = answer.raw.read(EXCERPT_CHARS * 4, decode_content=True) or b""
                excerpt = raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
                return Response(answer.status_code, excerpt=excerpt or None)
    except webhooks.PrivateDestination as exc:
        return Response(None, error=f"refused: {exc}"[:500])
    except requests.RequestException as exc:
        return Response(None, error=f"{type(exc).__name__}: {exc}"[:500])
    except Exception as exc:  # a receiver must never break the dispatcher
        return Response(None, error=f"{type(exc).__name__}: {exc}"[:500])


class Dispatcher(Worker):
    """Sends the webhook deliveries of one server process; ``start`` runs it in a thread, tests call ``run_once``."""

    thread_name = "tether-dispatcher"

    def __init__(self, app: Flask, *, batch: int = 50, rng=random.random):
        self.app = app
        self.batch = batch
        self.rng = rng
        config = app.config
        self.timeout = float(config["WEBHOOK_TIMEOUT"])
        self.max_attempts = max(1, int(config["WEBHOOK_MAX_ATTEMPTS"]))
        self.base = float(config["WEBHOOK_RETRY_BASE_SECONDS"])
        self.cap = float(config["WEBHOOK_RETRY_CAP_SECONDS"])
        self.poll = float(config["WEBHOOK_POLL_SECONDS"])
        self.source = str(config["EVENT_SOURCE"])
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, int(config["WEBHOOK_CONCURRENCY"])), thread_name_prefix="tether-webhook"
        )
        super().__init__()

    def wake(self) -> None:
        """Ring the bell the loop waits on."""
        bell(self.app).ring()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (a send in progress finishes) and the senders."""
        super().stop(self.timeout + 5 if timeout is None else timeout)
        self._pool.shutdown(wait=False)

    def run_once(self) -> int:
        """Claim the deliveries due now and send them; returns how many were attempted."""
        with self.app.app_context():
            lease = timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
            claims = claim_due(now(), self.batch, lease)
            db.session.remove()
        list(self._pool.map(self._attempt, claims))
        return len(claims)

    def drain(self, rounds: int = 100) -> int:
        """Run until nothing is due (deliveries unblocked by earlier ones included); returns attempts made."""
        total = 0
        for _ in range(rounds):
            sent = self.run_once()
            total += sent
            if not sent:
                break
        return total

    def next_due(self) -> datetime | None:
        """When the next delivery that may be sent is due (None when nothing is pending)."""
        with self.app.app_context():
            due = db.session.execute(_sendable(func.min(WebhookDelivery.next_attempt_at))).scalar()
            db.session.remove()
        return due

    def _loop(self) -> None:
        """Send what is due; sleep until the bell rings, the next retry is due, or the poll interval ends."""
        ringing = bell(self.app)
        seen = ringing.rings
        while not self._stop.is_set():
            wait = self.poll
            self.replay_audit_spool()  # at start, and then on every round
            try:
                if self.run_once():
                    continue
                due = self.next_due()
                if due is not None:
                    with self.app.app_context():
                        wait = min(wait, max(0.0, (due - now()).total_seconds()))
            except Exception:
                log.exception("webhook dispatch failed; trying again shortly")
            seen = ringing.wait(seen, wait)

    def replay_audit_spool(self) -> int:
        """Chain the audit entries that waited in the spool for the database; returns how many (0 on failure)."""
        with self.app.app_context():
            try:
                return audit.replay_spool()
            except Exception as exc:  # still busy or unreachable: the spool is kept for the next round
                log.warning("audit spool not chained yet: %s", exc)
                return 0
            finally:
                db.session.remove()

    def _attempt(self, claim: Claim) -> None:
        """Send one claimed delivery and record the outcome."""
        with self.app.app_context():
            try:
                # Deliveries, events and subscriptions are never deleted (an ended subscription is inactive).
                delivery = db.session.get_one(WebhookDelivery, claim.delivery_id)
                row = db.session.get_one(OutboxEvent, delivery.outbox_event_id)
                subscription = db.session.get_one(WebhookSubscription, delivery.subscription_id)
                url, secret = subscription.url, subscription.secret
                body = delivery_json(row, subscription, self.source)  # what the owner may know of it
                db.session.rollback()
                allow_private = bool(self.app.config.get("WEBHOOK_ALLOW_PRIVATE"))
                headers, body = signed_request(row, body, secret, datetime.now(UTC))
                response = post(url, headers, body, self.timeout, allow_private=allow_private)
                self._record(claim, response)
            except Exception:
                log.exception("webhook delivery %s failed unexpectedly", claim.delivery_id)
            finally:
                db.session.remove()

    def _record(self, claim: Claim, response: Response) -> None:
        """Store the outcome, unless the delivery changed meanwhile (redelivered, or its lease ran out)."""
        moment = now()
        values: dict = {
            "last_status_code": response.status_code,
            "response_excerpt": response.excerpt,
            "last_error": response.error,
        }
        final_failure = False
        if response.ok:
            values.update(status="delivered", delivered_at=moment, next_attempt_at=None, last_error=None)
        elif claim.attempt >= self.max_attempts:
            values.update(status="failed", next_attempt_at=None)
            final_failure = True
        else:
            values.update(next_attempt_at=moment + retry_delay(claim.attempt, self.base, self.cap, self.rng))
        if values["last_error"] is None and not response.ok:
            values["last_error"] = f"the receiver answered {response.status_code}"
        with unit_of_work():
            changed = rows_changed(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == claim.delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.attempts == claim.attempt,
                    WebhookDelivery.next_attempt_at == claim.lease_until,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if changed and final_failure:
                audit.append(
                    "dispatcher",
                    "webhook.delivery_failed",
                    "webhook_delivery",
                    claim.delivery_id,
                    data={
                        "attempts": claim.attempt,
                        "last_status_code": response.status_code,
                        "last_error": values["last_error"],
                    },
                )
        if response.ok or final_failure:
            bell(self.app).ring()  # a later event of the same therapy may now be due
