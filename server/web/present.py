"""How values look on the pages: times, due dates, the COI with its check character, the vein-to-vein clock, how
long a therapy has been held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.coi import CoiError, parse_coi
from server.clock import clock
from server.store.models import Therapy, utcnow


def now() -> datetime:
    """The server's clock (the injected one in tests)."""
    moment = clock()()
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_time(value) -> datetime | None:
    """A datetime from a datetime or an ISO 8601 text; None when neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def when(value) -> str:
    """A moment as 'YYYY-MM-DD HH:MM UTC'."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def iso(value) -> str:
    """A moment as ISO 8601 UTC (for <time datetime> and scripts)."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def duration(delta: timedelta) -> str:
    """A span as '3 d 4 h', '5 h 10 min' or '12 min'."""
    minutes = int(abs(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


def short_duration(delta: timedelta) -> str:
    """A span in its largest units only: '2 d 4 h', '3 h' or '25 min' (for badges)."""
    minutes = int(abs(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    return f"{hours} h" if hours else f"{mins} min"


def held_for(therapy: Therapy) -> str:
    """How long a held therapy has been held ('3 h'); empty when it is not on hold."""
    since = parse_time(therapy.held_at) if therapy.status == "on_hold" else None
    return short_duration(now() - since) if since else ""


def relative(value) -> str:
    """'in 3 h 5 min' or '2 d 1 h ago'."""
    moment = parse_time(value)
    if moment is None:
        return ""
    delta = moment - now()
    return f"in {duration(delta)}" if delta.total_seconds() >= 0 else f"{duration(delta)} ago"


def is_late(value) -> bool:
    """Whether a due time has passed."""
    moment = parse_time(value)
    return moment is not None and moment < now()


def eye_readable(coi: str) -> str:
    """The COI with its check character ('CHW12342600A1B7 C')."""
    try:
        return parse_coi(coi).eye_readable
    except CoiError:
        return coi


def coi_check(coi: str) -> str:
    """The COI's mod 37-2 check character."""
    try:
        return parse_coi(coi).check
    except CoiError:
        return ""


COLLECTION_KEYS = ("collection_started_at", "collection_completed_at")
INFUSION_KEYS = ("infusion_started_at", "infusion_completed_at")


def vein_to_vein(therapy: Therapy) -> dict:
    """The vein-to-vein clock: from collection to infusion (running while the therapy is on its way)."""
    data = therapy.data or {}
    start = next((parse_time(data.get(k)) for k in COLLECTION_KEYS if parse_time(data.get(k))), None)
    end = next((parse_time(data.get(k)) for k in INFUSION_KEYS if parse_time(data.get(k))), None)
    if start is None:
        return {"state": "not_started", "text": "starts at collection", "start": None, "end": None}
    if end is not None:
        return {"state": "stopped", "text": duration(end - start), "start": iso(start), "end": iso(end)}
    if therapy.status != "active":
        return {
            "state": "stopped",
            "text": f"{duration((therapy.ended_at or utcnow()) - start)} (no infusion)",
            "start": iso(start),
            "end": None,
        }
    return {"state": "running", "text": duration(now() - start), "start": iso(start), "end": None}


def register(app_or_bp) -> None:
    """Make the formatters available as template filters."""
    for name, function in (
        ("when", when),
        ("iso", iso),
        ("relative", relative),
        ("late", is_late),
        ("eye_readable", eye_readable),
        ("held_for", held_for),
    ):
        app_or_bp.add_app_template_filter(function, name)
