"""List paging: ``limit`` (default 50, max 500) and an opaque ``cursor``."""

from __future__ import annotations

import base64
import json

from flask import request

from ..errors import BadRequest

MAX_OFFSET = 2**62  # far beyond any list, and within what every database's OFFSET takes


def page_params() -> tuple[int, int]:
    """(limit, offset) from the query string; 400 for nonsense."""
    raw = request.args.get("limit", "50").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise BadRequest(
            "limit must be a whole number between 1 and 500.", code="invalid_limit", details={"field": "limit"}
        )
    limit = int(raw)
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500.", code="invalid_limit", details={"field": "limit"})
    cursor = request.args.get("cursor")
    offset = 0
    if cursor:
        decoded: object
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())["o"]
        except (ValueError, KeyError, TypeError, RecursionError):
            decoded = None
        if type(decoded) is not int or not 0 <= decoded <= MAX_OFFSET:
            raise BadRequest(
                "cursor is not one this server handed out.", code="invalid_cursor", details={"field": "cursor"}
            )
        offset = decoded
    return limit, offset


def page(query, serialize) -> dict:
    """Run ``query`` for one page and wrap it as ``{"items", "next_cursor"}``."""
    from server.store.extensions import db

    limit, offset = page_params()
    rows = db.session.execute(query.limit(limit + 1).offset(offset)).scalars().all()
    items = [serialize(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = base64.urlsafe_b64encode(json.dumps({"o": offset + limit}).encode()).decode()
    return {"items": items, "next_cursor": next_cursor}
