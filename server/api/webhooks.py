"""Webhook subscriptions and their deliveries (integrator, admin)."""

from __future__ import annotations

import base64
import json

from flask import g, request
from sqlalchemy import select

from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import WebhookCreateSchema, load_json
from server.clock import iso
from server.integration import webhooks
from server.store.extensions import db
from server.store.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from server.usecases import handle
from server.usecases.webhook_commands import SUBSCRIBERS, Redeliver, Subscribe, Unsubscribe, visible_subscription

from ..errors import BadRequest
from . import bp
from .paging import page, page_params

DELIVERY_STATUSES = ("pending", "delivered", "failed")


def subscription_item(subscription: WebhookSubscription, *, with_secret: bool = False) -> dict:
    """A subscription as the API shows it; the secret only in the answer that created it."""
    item = {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events or []),
        "active": subscription.active,
        "created_by": subscription.created_by,
        "created_at": iso(subscription.created_at),
    }
    if with_secret:
        item["secret"] = subscription.secret
    return item


def delivery_item(delivery: WebhookDelivery, event_id: str) -> dict:
    """A delivery as the API shows it (``event_id`` is the CloudEvent id and the ``webhook-id`` header)."""
    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "event_id": event_id,
        "event_type": delivery.event_type,
        "therapy_id": delivery.therapy_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "response_excerpt": delivery.response_excerpt,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "delivered_at": iso(delivery.delivered_at),
        "created_at": iso(delivery.created_at),
    }


@bp.post("/webhooks")
@require(*Subscribe.ROLES)
@idempotent
def create_webhook():
    """Subscribe an endpoint to event types (patterns such as ``therapy.*``); the answer carries its secret."""
    body = load_json(WebhookCreateSchema())
    subscription = handle(Subscribe(body["url"], tuple(body["events"]), g.user))
    return subscription_item(subscription, with_secret=True), 201


@bp.get("/webhooks")
@require(*SUBSCRIBERS)
def list_webhooks():
    """The caller's webhook subscriptions (every one, for admin), oldest first."""
    query = webhooks.visible_subscriptions(g.user).order_by(WebhookSubscription.created_at, WebhookSubscription.id)
    return page(query, subscription_item)


@bp.get("/webhooks/<webhook_id>")
@require(*SUBSCRIBERS)
def get_webhook(webhook_id: str):
    """One webhook subscription (without its secret)."""
    return subscription_item(visible_subscription(g.user, webhook_id))


@bp.delete("/webhooks/<webhook_id>")
@require(*Unsubscribe.ROLES)
def delete_webhook(webhook_id: str):
    """End a subscription: nothing more is sent to it and its pending deliveries are dropped."""
    handle(Unsubscribe(webhook_id, g.user))
    return "", 204


@bp.get("/webhooks/<webhook_id>/deliveries")
@require(*SUBSCRIBERS)
def list_deliveries(webhook_id: str):
    """The subscription's deliveries, newest event first, optionally by ``status``."""
    subscription = visible_subscription(g.user, webhook_id)
    query = (
        select(WebhookDelivery, OutboxEvent.event_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.outbox_event_id)
        .where(WebhookDelivery.subscription_id == subscription.id)
        .order_by(WebhookDelivery.outbox_event_id.desc())
    )
    status = request.args.get("status")
    if status:
        if status not in DELIVERY_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}.", code="invalid_filter")
        query = query.where(WebhookDelivery.status == status)
    if request.args.get("therapy_id"):
        query = query.where(WebhookDelivery.therapy_id == request.args["therapy_id"])
    limit, offset = page_params()
    rows = db.session.execute(query.limit(limit + 1).offset(offset)).all()
    next_cursor = None
    if len(rows) > limit:
        next_cursor = base64.urlsafe_b64encode(json.dumps({"o": offset + limit}).encode()).decode()
    return {"items": [delivery_item(d, event_id) for d, event_id in rows[:limit]], "next_cursor": next_cursor}


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver")
@require(*Redeliver.ROLES)
@idempotent
def redeliver(webhook_id: str, delivery_id: str):
    """Send a delivery again (for instance after the receiver was down), with a fresh retry schedule."""
    delivery, event_id = handle(Redeliver(webhook_id, delivery_id, g.user))
    return delivery_item(delivery, event_id), 202
