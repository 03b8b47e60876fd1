"""Query filters shared by the list endpoints: a checked ``status`` choice and the caller's sites."""

from __future__ import annotations

from collections.abc import Iterable

from flask import g, request

from ..auth import visible_site_ids
from ..errors import BadRequest


def by_status(query, column, allowed: Iterable[str]):
    """Keep rows whose ``column`` equals the ``status`` query argument; 400 for a value not in ``allowed``."""
    status = request.args.get("status")
    if not status:
        return query
    allowed = tuple(allowed)
    if status not in allowed:
        raise BadRequest(f"status must be one of {', '.join(allowed)}.", code="invalid_filter")
    return query.where(column == status)


def within_caller_sites(query, site_column):
    """Keep rows of the sites the caller may see (all rows for a user who is not site-scoped)."""
    sites = visible_site_ids(g.user)
    return query if sites is None else query.where(site_column.in_(sites))
