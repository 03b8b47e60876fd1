"""Query filters shared by the list endpoints: a checked ``status``, bounded whole numbers, the caller's sites."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from flask import g, request

from engine.values import INT_MAX, INT_MIN
from server.access.auth import visible_site_ids

from ..errors import BadRequest, Invalid

WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take other scripts' digits


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


def whole_number(name: str, low: int = INT_MIN, high: int = INT_MAX) -> int | None:
    """The query argument ``name`` as an integer (None when absent or empty).

    400 when it is not a whole number; 422 when it is outside ``[low, high]`` (by default the 64-bit range a
    database column holds), so an out-of-range value never reaches a query.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not WHOLE_NUMBER.fullmatch(text):
        raise BadRequest(f"{name} must be a whole number.", code="invalid_filter", details={"field": name})
    if len(text.lstrip("+-0")) > len(str(INT_MAX)) or not low <= int(text) <= high:
        raise Invalid(
            f"{name} must be between {low} and {high}.",
            code="invalid_filter",
            details={"field": name, "reason": "integer_out_of_range"},
        )
    return int(text)


def moment_arg(name: str) -> datetime | None:
    """The query argument ``name`` as a UTC moment (ISO 8601; no offset means UTC), None when absent; 400 when it
    is not one."""
    value = request.args.get(name)
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):  # OverflowError: an offset that takes it past year 1 or 9999 in UTC
        raise BadRequest(
            f"'{name}' must be an ISO 8601 timestamp between the years 1 and 9999 in UTC.",
            code="invalid_filter",
            details={"field": name},
        ) from None


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a moment without an offset is taken as UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
