"""List paging: ``limit`` (default 50, max 500) and an opaque ``cursor``."""

from __future__ import annotations

import base64
import json

from flask import request

from ..errors import BadRequest


def page_params() -> tuple[int, int]:
    """(limit, offset) from the query string; 400 for nonsense."""
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise BadRequest("limit must be a whole number.", code="invalid_limit") from None
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500.", code="invalid_limit")
    cursor = request.args.get("cursor")
    offset = 0
    if cursor:
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())["o"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest("cursor is not one this server handed out.", code="invalid_cursor") from None
    return limit, offset


def page(query, serialize) -> dict:
    """Run ``query`` for one page and wrap it as ``{"items", "next_cursor"}``."""
    from ..extensions import db

    limit, offset = page_params()
    rows = db.session.execute(query.limit(limit + 1).offset(offset)).scalars().all()
    items = [serialize(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = base64.urlsafe_b64encode(json.dumps({"o": offset + limit}).encode()).decode()
    return {"items": items, "next_cursor": next_cursor}
