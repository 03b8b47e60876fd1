"""The REST API under /api/v1."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from . import audit_views, definitions, health, messages, tasks, therapies, tokens  # noqa: E402,F401
