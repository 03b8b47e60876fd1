"""Webhook subscriptions: creating and ending them, checking their URLs, and fanning outbox events out.

Webhooks go to public addresses only (unless ``TETHER_WEBHOOK_ALLOW_PRIVATE``): a URL whose host is or
resolves to a loopback, private, link-local or metadata address is refused at registration, and the
dispatcher checks again before each attempt and refuses to talk to such an address when it connects.

Fan-out happens inside the transaction that writes an outbox event: the first of the unit of work's commit
steps (``fan_out_staged``, named by the app factory) inserts one ``webhook_delivery`` row per staged
``outbox_event`` and active subscription whose event patterns match and whose owner may see the event (a
therapy's event: one of the owner's sites is one of the therapy's parties; another event: its site, if any).
So a delivery exists exactly when its event committed, a subscription sees only events written after it
was created, and nothing is lost between the commit and the dispatcher (``server/integration/dispatcher.py``),
which only sends what is already there. A delivery's body is the outbox event as its subscription's owner
may read it (``delivery_json``): the patient reference withheld unless the owner may know it.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from flask import Flask, current_app, has_app_context
from sqlalchemy import and_, func, insert, inspect, select, update

from server.errors import Conflict, Invalid
from server.integration import outbox
from server.store import audit, freshness
from server.store.extensions import db
from server.store.models import (
    OutboxEvent,
    User,
    WebhookDelivery,
    WebhookSubscription,
    new_id,
    table_of,
    user_sites,
    utcnow,
)
from server.store.uow import after_commit, rows_changed, take_staged, unit_of_work

SENDING = "sending"  # a delivery's last_error while a dispatcher holds it (until its lease ends)
MAX_URL_LENGTH = 2000
MAX_PATTERNS = 50
_PATTERN_PARTS = set("abcdefghijklmnopqrstuvwxyz0123456789_.*-")


# -- checking what a subscriber sends -----------------------------------------------------------


def check_url(url: Any) -> str:
    """An absolute http(s) URL with a host and no credentials; 422 naming the field otherwise."""

    def refuse(message: str) -> Invalid:
        """The 422 for a bad URL."""
        return Invalid(message, code="invalid_webhook_url", details={"field": "url"})

    if not isinstance(url, str) or not url.strip():
        raise refuse("Give the endpoint as an absolute http or https URL.")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise refuse("The URL contains white space or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"The URL cannot be read: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("Webhook URLs must use http or https.")
    if not parts.hostname:
        raise refuse("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise refuse("Do not put credentials in the URL; verify the webhook-signature header instead.")
    if parts.fragment:
        raise refuse("The URL must not have a #fragment.")
    if port == 0:
        raise refuse("The URL names port 0.")
    if not private_allowed():
        try:
            check_public_host(parts.hostname, port or (443 if parts.scheme == "https" else 80))
        except PrivateDestination as exc:
            raise Invalid(
                str(exc),
                code="invalid_webhook_url",
                details={"field": "url", "host": parts.hostname, "address": exc.address},
            ) from None
    return url


# -- where webhooks may go ---------------------------------------------------------------------------

# Never a webhook's destination (unless TETHER_WEBHOOK_ALLOW_PRIVATE): loopback, private, shared (carrier-grade
# NAT), link-local (cloud metadata at 169.254.169.254), unspecified, multicast and reserved addresses. Any other
# address that is not globally reachable is refused as well; IPv4 addresses inside IPv6 ones (mapped, 6to4,
# NAT64) are judged by their IPv4 address.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateDestination(Exception):
    """A webhook host that is, or resolves to, an address webhooks may not reach; ``address`` says which."""

    def __init__(self, message: str, address: str | None = None):
        super().__init__(message)
        self.address = address


def private_allowed() -> bool:
    """Whether this server may send webhooks to private addresses (``TETHER_WEBHOOK_ALLOW_PRIVATE``)."""
    return has_app_context() and bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))


def blocked_address(address: str) -> bool:
    """Whether ``address`` (an IP address as text) is one that webhooks may not reach."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version) or not ip.is_global


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_public_host(
    host: str, port: int, refuses: Callable[[str], bool] = blocked_address, allowed: str = "webhooks go to public hosts"
) -> list[str]:
    """The addresses of ``host``, none of which ``refuses`` (by default: all public); PrivateDestination when one
    is refused or none resolves, its message ending with what is ``allowed``."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise PrivateDestination(f"The host {host} cannot be resolved ({exc}); {allowed} only.") from None
    if not addresses:
        raise PrivateDestination(f"The host {host} cannot be resolved; {allowed} only.")
    for address in addresses:
        if refuses(address):
            raise PrivateDestination(
                f"The host {host} is or resolves to {address}, a loopback, private, link-local or otherwise "
                f"non-public address; {allowed} only.",
                address,
            )
    return addresses


def check_patterns(events: Any) -> list[str]:
    """Event type patterns such as ``therapy.*``, ``task.completed`` or ``*``; 422 naming the field otherwise."""
    if not isinstance(events, list) or not events:
        raise Invalid(
            "Give 'events' as a non-empty list of event types or patterns, e.g. [\"therapy.*\"].",
            code="invalid_event_patterns",
            details={"field": "events"},
        )
    if len(events) > MAX_PATTERNS:
        raise Invalid(
            f"Give at most {MAX_PATTERNS} event patterns.", code="invalid_event_patterns", details={"field": "events"}
        )
    out: list[str] = []
    for index, pattern in enumerate(events):
        valid = (
            isinstance(pattern, str)
            and 0 < len(pattern) <= 64
            and set(pattern) <= _PATTERN_PARTS
            and (pattern == "*" or ("*" not in pattern[:-1] and not pattern.startswith(".")))
        )
        if not valid:
            raise Invalid(
                f"Event pattern {pattern!r} is not an event type or a pattern such as 'therapy.*'.",
                code="invalid_event_patterns",
                details={"field": f"events.{index}"},
            )
        if pattern not in out:
            out.append(pattern)
    return out


def matches(patterns: list[str], event_type: str) -> bool:
    """Whether ``event_type`` is one of ``patterns`` (a trailing ``*`` matches any rest)."""
    return any(fnmatchcase(event_type, pattern) for pattern in patterns)


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# -- subscriptions ---------------------------------------------------------------------------------


def subscribe(url: Any, events: Any, user: User) -> WebhookSubscription:
    """Create a subscription for ``user`` (audited); it receives only events written from now on."""
    url, patterns = check_url(url), check_patterns(events)
    with unit_of_work():
        subscription = WebhookSubscription(
            url=url, events=patterns, secret=new_secret(), active=True, created_by=user.username, created_at=now()
        )
        db.session.add(subscription)
        db.session.flush()
        audit.append(
            user.username,
            "webhook.subscribed",
            "webhook_subscription",
            subscription.id,
            data={"url": url, "events": patterns, "sites": user.site_codes if user.scoped else None},
        )
    return subscription


def unsubscribe(subscription: WebhookSubscription, actor: str) -> None:
    """End a subscription (audited): nothing more is sent to it, and its pending deliveries are dropped."""
    with unit_of_work():
        subscription.active = False
        dropped = (
            db.session.execute(
                select(WebhookDelivery).where(
                    WebhookDelivery.subscription_id == subscription.id, WebhookDelivery.status == "pending"
                )
            )
            .scalars()
            .all()
        )
        for delivery in dropped:
            delivery.status, delivery.next_attempt_at = "failed", None
            delivery.last_error = "the subscription was deleted"
        audit.append(
            actor,
            "webhook.unsubscribed",
            "webhook_subscription",
            subscription.id,
            data={"url": subscription.url, "pending_dropped": len(dropped)},
        )


def redeliver(delivery: WebhookDelivery, actor: str) -> WebhookDelivery:
    """Send a delivery again from a fresh retry schedule, whatever its state (audited); 409 while it is being sent."""
    moment = now()
    previous = {"status": delivery.status, "attempts": delivery.attempts}
    being_sent = and_(
        WebhookDelivery.status == "pending",
        func.coalesce(WebhookDelivery.last_error, "") == SENDING,
        WebhookDelivery.next_attempt_at > moment,
    )
    with unit_of_work():
        changed = rows_changed(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, ~being_sent)
            .values(status="pending", attempts=0, next_attempt_at=moment, last_error=None)
            .execution_options(synchronize_session=False)
        )
        if not changed:
            raise Conflict(
                "This delivery is being sent right now; look at its outcome before sending it again.",
                code="delivery_in_progress",
                details={"delivery_id": delivery.id},
            )
        audit.append(
            actor,
            "webhook.redelivery_requested",
            "webhook_delivery",
            delivery.id,
            data={"subscription_id": delivery.subscription_id, "event_type": delivery.event_type, "previous": previous},
        )
        ring_after_commit()
    db.session.refresh(delivery)
    return delivery


def visible_subscriptions(user: User):
    """A query for the active subscriptions ``user`` may manage: all for admin, else their own."""
    query = select(WebhookSubscription).where(WebhookSubscription.active.is_(True))
    if "admin" not in user.roles:
        query = query.where(WebhookSubscription.created_by == user.username)
    return query


# -- CloudEvents -------------------------------------------------------------------------------------


def cloud_event_json(row: Any, source: str, data: dict | None = None) -> bytes:
    """The event as one CloudEvents 1.0 structured-mode JSON document (the webhook body and SSE data), with
    ``data`` in place of the row's own (a reader's view of it, ``outbox.Reader.view``) when given."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": row.event_id,
        "source": source,
        "type": row.type,
        "time": created.astimezone(UTC),
        "datacontenttype": "application/json",
    }
    if row.therapy_id:
        attributes["subject"] = row.therapy_id
    return to_structured_event(CloudEvent(attributes, _json_ready(row.data or {} if data is None else data))).body


def delivery_json(row: OutboxEvent, subscription: WebhookSubscription, source: str) -> bytes:
    """The body of the event ``row`` for ``subscription``: the patient reference withheld unless the
    subscription's owner may know it (decided as it is sent, by the owner's roles and sites then)."""
    connection = db.session.connection()
    owner = _owners(connection, {subscription.created_by}).get(subscription.created_by)
    audience = outbox.audiences(connection, [row.therapy_id]).get(row.therapy_id or "")
    if owner is None:  # the owner was deactivated since: the delivery goes out as nobody's to know
        owner = outbox.Reader.of((), ())
    return cloud_event_json(row, source, owner.view(row.data or {}, audience))


def _json_ready(data: Any) -> Any:
    """Data as plain JSON values (what the outbox stored is already JSON; this guards against surprises)."""
    return json.loads(json.dumps(data, default=str))


# -- time ---------------------------------------------------------------------------------------------


def now() -> datetime:
    """The server's clock (tests inject a fake one through ``app.config['CLOCK']``)."""
    if has_app_context():
        clock = current_app.config.get("CLOCK")
        if clock is not None:
            return clock()
    return utcnow()


# -- wake-ups within one process ----------------------------------------------------------------------


class CommitBell:
    """Rings when this process commits outbox events or deliveries; live streams and the dispatcher wait on it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.rings = 0

    def ring(self) -> None:
        """Wake every waiter."""
        with self._condition:
            self.rings += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until a ring after ``seen`` (or ``timeout`` seconds); returns the current ring count."""
        with self._condition:
            if self.rings == seen:
                self._condition.wait(timeout)
            return self.rings


_bell_lock = threading.Lock()


def bell(app: Flask) -> CommitBell:
    """The commit bell of ``app``."""
    with _bell_lock:
        return app.extensions.setdefault("tether_bell", CommitBell())


def ring_after_commit() -> None:
    """Ring this app's bell once the current unit of work has committed (not at all if it rolls back)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    after_commit(lambda: bell(app).ring())


# -- fan-out ------------------------------------------------------------------------------------------


Subscription = tuple[str, list[str], str]  # (id, patterns, owner's user name) of an active subscription


class SubscriptionCache:
    """The active subscriptions as this process last read them, with the change count they were read at
    (``server.store.freshness``): a transaction that read the same count uses them without asking again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: tuple[int, list[Subscription]] | None = None

    def get(self, changes: int | None) -> list[Subscription] | None:
        with self._lock:
            read = self._read
        return read[1] if read is not None and changes is not None and read[0] == changes else None

    def put(self, changes: int, subscriptions: list[Subscription]) -> None:
        with self._lock:
            self._read = (changes, subscriptions)


def subscription_cache(app: Flask) -> SubscriptionCache:
    """The subscription cache of ``app`` (one per process and database)."""
    with _bell_lock:
        return app.extensions.setdefault("tether_webhook_subscriptions", SubscriptionCache())


def _active_subscriptions(connection) -> list[Subscription]:
    """The active subscriptions: from this process's cache when the current transaction read the change count
    they were cached at, else from the database (with the count, in one query, and cached)."""
    cache = subscription_cache(current_app) if has_app_context() else None
    known = freshness.known()
    cached = cache.get(known) if cache is not None else None
    if cached is not None:
        return cached
    # One row with the change count, and the active subscriptions (if any) outer-joined to it.
    counted = select(freshness.webhook_changes().label("changes")).subquery()
    rows = connection.execute(
        select(
            counted.c.changes, WebhookSubscription.id, WebhookSubscription.events, WebhookSubscription.created_by
        ).select_from(counted.outerjoin(WebhookSubscription, WebhookSubscription.active.is_(True)))
    ).all()
    subscriptions = [(row[1], list(row[2] or []), row[3]) for row in rows if row[1] is not None]
    if cache is not None and rows:
        cache.put(rows[0][0], subscriptions)
    return subscriptions


def _subscribers(
    connection, subscriptions: list[Subscription] | None = None
) -> list[tuple[str, list[str], outbox.Reader]]:
    """(id, patterns, owner as a reader) of each active subscription (``subscriptions``, when read already)
    whose owner is active."""
    if subscriptions is None:
        subscriptions = _active_subscriptions(connection)
    if not subscriptions:
        return []
    owners = _owners(connection, {name for _id, _events, name in subscriptions})
    return [
        (subscription_id, list(patterns or []), owners[owner])
        for subscription_id, patterns, owner in subscriptions
        if owner in owners
    ]


def _owners(connection, usernames: set[str]) -> dict[str, outbox.Reader]:
    """Each active user of ``usernames`` as a reader of events (their roles and sites now)."""
    rows = connection.execute(
        select(User.username, User.roles, user_sites.c.site_id)
        .outerjoin(user_sites, user_sites.c.user_id == User.id)
        .where(User.username.in_(usernames), User.active.is_(True))
    ).all()
    roles_of: dict[str, list[str]] = {}
    sites_of: dict[str, set[int]] = {}
    for username, roles, site_id in rows:
        roles_of[username] = list(roles or [])
        sites_of.setdefault(username, set()).update({site_id} if site_id is not None else set())
    return {username: outbox.Reader.of(roles_of[username], sites_of[username]) for username in roles_of}


def fan_out(
    connection, events: list[OutboxEvent], moment: datetime, subscriptions: list[Subscription] | None = None
) -> int:
    """Insert one pending delivery per (event, matching subscription whose owner may see it: a therapy's event
    when one of the owner's sites is one of its parties now); returns how many."""
    subscribers = _subscribers(connection, subscriptions)
    if not subscribers:
        return 0
    audience = outbox.audiences(connection, (row.therapy_id for row in events))
    rows = []
    for row in sorted(events, key=lambda e: e.id):
        for subscription_id, patterns, owner in subscribers:
            if not matches(patterns, row.type):
                continue
            if not owner.sees_event(row.therapy_id, row.site_id, audience.get(row.therapy_id or "")):
                continue
            rows.append(
                {
                    "id": new_id(),
                    "subscription_id": subscription_id,
                    "outbox_event_id": row.id,
                    "event_type": row.type,
                    "therapy_id": row.therapy_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": moment,
                    "created_at": moment,
                }
            )
    if rows:
        connection.execute(insert(table_of(WebhookDelivery)), rows)
    return len(rows)


def fan_out_staged() -> None:
    """The unit of work's commit step for the outbox: fan the transaction's staged events out to the
    subscriptions, in the same transaction, and ring the bell once it has committed.

    When no subscription is active (nothing needs the events' ids now), the events are written as rows, not
    flushed as objects: on PostgreSQL they go in with the audit entries' INSERT (``audit.carry``), on SQLite by
    one INSERT of their own."""
    events = take_staged(outbox.STAGED)
    if not events:
        return
    session = db.session()
    connection = session.connection()
    subscriptions = _active_subscriptions(connection)
    if not subscriptions and all(inspect(e).pending for e in events):
        for event in events:
            session.expunge(event)
        rows = [_outbox_row(event) for event in events]
        if connection.dialect.name == "postgresql":
            audit.carry(insert(table_of(OutboxEvent)).values(rows))
        else:
            connection.execute(_outbox_insert(), rows)
        ring_after_commit()
        return
    session.flush()
    fan_out(connection, events, now(), subscriptions)
    ring_after_commit()


@functools.cache
def _outbox_insert():
    """The outbox's INSERT, built once per process (its compiled form is cached by the statement itself)."""
    return insert(table_of(OutboxEvent))


def _outbox_row(event: OutboxEvent) -> dict[str, Any]:
    """The columns of an event not flushed yet, with the defaults a flush would give them (the id from the
    table's sequence)."""
    row = {column.key: getattr(event, column.key) for column in table_of(OutboxEvent).columns if column.key != "id"}
    row["event_id"] = row["event_id"] or new_id()
    row["created_at"] = row["created_at"] or utcnow()
    row["data"] = row["data"] if row["data"] is not None else {}
    return row
