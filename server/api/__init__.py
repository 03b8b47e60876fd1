"""The REST API under /api/v1."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from . import (  # noqa: E402,F401
    admin,
    alerts,
    audit_views,
    capacity,
    conditions,
    corrections,
    custody,
    definitions,
    drafts,
    events,
    health,
    incidents,
    messages,
    metrics,
    reason_codes,
    records,
    scheduling,
    shipments,
    tasks,
    therapies,
    tokens,
    webhooks,
)
