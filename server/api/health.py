"""Health and API documentation."""

from __future__ import annotations

from flask import current_app, jsonify
from sqlalchemy import text

from ..extensions import db
from . import bp


@bp.get("/health")
def health():
    """Whether the database answers and the timer scheduler runs (200), else 503."""
    database = "ok"
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception:  # any database failure is reported, not raised
        database = "unavailable"
    scheduler = current_app.extensions.get("tether_scheduler")
    state = "running" if scheduler is not None and scheduler.running else "stopped"
    if not current_app.config.get("SCHEDULER"):
        state = "disabled"
    ok = database == "ok" and state in ("running", "disabled")
    return jsonify({"status": "ok" if ok else "degraded", "database": database, "scheduler": state}), (
        200 if ok else 503)


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of every endpoint."""
    from ..openapi import build_document

    return jsonify(build_document(current_app))
