"""Webhook subscriptions: subscribing an endpoint to event types, ending a subscription, sending a delivery
again. A subscription is its owner's (an administrator manages every one): for anyone else it does not exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import select

from server.access.auth import check_roles
from server.errors import NotFound
from server.integration import webhooks
from server.store.extensions import db
from server.store.models import OutboxEvent, User, WebhookDelivery, WebhookSubscription

from .checks import audits_refusals

SUBSCRIBERS = ("integrator", "admin")


@dataclass(frozen=True)
class Subscribe:
    """``by`` subscribes the endpoint ``url`` to the event types or patterns ``events`` (``therapy.*``)."""

    ROLES: ClassVar[tuple[str, ...]] = SUBSCRIBERS

    url: str
    events: tuple[str, ...]
    by: User


@dataclass(frozen=True)
class Unsubscribe:
    """``by`` ends the subscription ``webhook_id``."""

    ROLES: ClassVar[tuple[str, ...]] = SUBSCRIBERS

    webhook_id: str
    by: User


@dataclass(frozen=True)
class Redeliver:
    """``by`` has the delivery ``delivery_id`` of the subscription ``webhook_id`` sent again."""

    ROLES: ClassVar[tuple[str, ...]] = SUBSCRIBERS

    webhook_id: str
    delivery_id: str
    by: User


def visible_subscription(user: User, webhook_id: str) -> WebhookSubscription:
    """The active subscription if ``user`` owns it (any, for an administrator); 404 otherwise."""
    query = webhooks.visible_subscriptions(user).where(WebhookSubscription.id == webhook_id)
    subscription = db.session.execute(query).scalar_one_or_none()
    if subscription is None:
        raise NotFound("No such webhook subscription.", details={"webhook_id": webhook_id})
    return subscription


@audits_refusals
def subscribe(command: Subscribe) -> WebhookSubscription:
    """Create the subscription (audited); it receives only events written from now on, of the sites its owner
    may see. 422 for a URL that is malformed or not public, or a malformed pattern."""
    check_roles(command.by, command.ROLES)
    return webhooks.subscribe(command.url, list(command.events), command.by)


@audits_refusals
def unsubscribe(command: Unsubscribe) -> None:
    """End the subscription (audited): nothing more is sent to it and its pending deliveries are dropped."""
    check_roles(command.by, command.ROLES)
    webhooks.unsubscribe(visible_subscription(command.by, command.webhook_id), command.by.username)


@audits_refusals
def redeliver(command: Redeliver) -> tuple[WebhookDelivery, str]:
    """Send the delivery again on a fresh retry schedule (audited); returns it and its event's id. 409
    ``delivery_in_progress`` while a dispatcher is sending it."""
    check_roles(command.by, command.ROLES)
    subscription = visible_subscription(command.by, command.webhook_id)
    row = db.session.execute(
        select(WebhookDelivery, OutboxEvent.event_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.outbox_event_id)
        .where(WebhookDelivery.id == command.delivery_id, WebhookDelivery.subscription_id == subscription.id)
    ).first()
    if row is None:
        raise NotFound("No such delivery of this webhook.", details={"delivery_id": command.delivery_id})
    delivery, event_id = row
    return webhooks.redeliver(delivery, command.by.username), event_id
