"""The server's clock: what time it is for the engine and every use case, and how a moment is written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import current_app


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


def clock() -> Callable[[], datetime]:
    """The clock the engine and the use cases run on (tests inject a fake one through app.config['CLOCK'])."""
    return current_app.config.get("CLOCK") or utcnow


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, or None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
