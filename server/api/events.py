"""Live events: ``GET /api/v1/events``, the outbox as Server-Sent Events of the CloudEvents the caller may see
(``server.integration.stream``), resumable with ``Last-Event-ID`` and filtered by ``types``."""

from __future__ import annotations

from flask import g, request

from server.access.auth import require
from server.integration import stream

from . import bp


@bp.get("/events")
@require()
def stream_events():
    """A live stream (Server-Sent Events) of the CloudEvents the caller may see; resumable with Last-Event-ID."""
    patterns = stream.type_patterns(request.args.get("types"))
    after = stream.resume_point(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    return stream.open_stream(g.user, after, patterns)
