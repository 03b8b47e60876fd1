"""The live event stream: the outbox as Server-Sent Events, the same CloudEvents as webhooks, resumable.

Each SSE message has ``id:`` = the outbox id and ``data:`` = the CloudEvents structured JSON. A client
that reconnects with ``Last-Event-ID`` (browsers' EventSource do this by themselves) gets every event
after that id. A stream waits on the commit bell of its own process and polls for events written by
other processes; it sends a comment line as a heartbeat and closes after ``EVENTS_STREAM_SECONDS`` so
that a gthread worker's threads are never held for good (the client just reconnects). A caller gets a
therapy's events when one of their sites is one of its parties, with the patient reference withheld unless
they may know it (``outbox.Reader``), decided as each event is streamed. One process holds
at most ``EVENTS_MAX_STREAMS`` streams open at once (429 beyond). The API (``GET /api/v1/events``) and the
control tower page open it alike, for their caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flask import Flask, Response, current_app, stream_with_context
from sqlalchemy import func, or_, select

from engine.values import INT_MAX
from server.errors import ApiError, BadRequest
from server.integration import outbox, webhooks
from server.store.extensions import db
from server.store.models import OutboxEvent, User

BATCH = 200
GAP_SECONDS = 30.0  # how long an id skipped by a still-open transaction is looked for again
MAX_GAPS = 1000
RETRY_MILLISECONDS = 2000
_slots_lock = threading.Lock()


def resume_point(last_event_id: str | None) -> int | None:
    """The outbox id a client asks to stream after (its ``Last-Event-ID``), or None when it names none; 400
    for anything but an event id."""
    if last_event_id is None or last_event_id.strip() == "":
        return None
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise BadRequest(
            "Last-Event-ID must be the id of an event this stream sent (a whole number).",
            code="invalid_last_event_id",
            details={"field": "Last-Event-ID"},
        ) from None
    if not 0 <= value <= INT_MAX:
        raise BadRequest(
            "Last-Event-ID must be an event id: a whole number from 0 to 2^63 - 1.",
            code="invalid_last_event_id",
            details={"field": "Last-Event-ID"},
        )
    return value


def type_patterns(types: str | None) -> list[str] | None:
    """The event type patterns of a comma-separated ``types`` filter, or None for every type; 422 naming
    ``types`` for a malformed pattern."""
    if not types:
        return None
    try:
        return webhooks.check_patterns([part.strip() for part in types.split(",") if part.strip()])
    except ApiError as exc:
        exc.details = {"field": "types"}
        raise


class Cursor:
    """Where a stream is: the highest id sent, and ids skipped over that a slower transaction may still commit."""

    def __init__(self, after: int):
        self.after = after
        self.gaps: dict[int, float] = {}

    def fetch(self) -> Sequence[Any]:
        """The next events after the cursor, and any late ones filling a gap, in id order (plain rows)."""
        condition = OutboxEvent.id > self.after
        if self.gaps:
            condition = or_(condition, OutboxEvent.id.in_(list(self.gaps)))
        columns = (
            OutboxEvent.id,
            OutboxEvent.event_id,
            OutboxEvent.type,
            OutboxEvent.therapy_id,
            OutboxEvent.site_id,
            OutboxEvent.data,
            OutboxEvent.created_at,
        )
        rows = db.session.execute(select(*columns).where(condition).order_by(OutboxEvent.id).limit(BATCH)).all()
        db.session.rollback()  # hand the connection back between polls
        return rows

    def advance(self, row_id: int) -> None:
        """Note that ``row_id`` was seen; ids jumped over become gaps for a while."""
        if row_id in self.gaps:
            del self.gaps[row_id]
            return
        deadline = time.monotonic() + GAP_SECONDS
        for missing in range(max(self.after + 1, row_id - MAX_GAPS), row_id):
            self.gaps.setdefault(missing, deadline)
        self.after = max(self.after, row_id)

    def forget_old_gaps(self) -> None:
        """Stop looking for ids that never committed (rolled back)."""
        moment = time.monotonic()
        self.gaps = {gap: deadline for gap, deadline in self.gaps.items() if deadline > moment}


def _sent(rows: Sequence[Any], reader: outbox.Reader, patterns: list[str] | None) -> list[tuple[Any, dict]]:
    """The rows of ``patterns`` (None: all) that ``reader`` may see, each with its data as they may read it
    (the therapies' parties and patients as they are now)."""
    wanted = [row for row in rows if patterns is None or webhooks.matches(patterns, row.type)]
    audience = outbox.audiences(db.session, (row.therapy_id for row in wanted))
    db.session.rollback()  # hand the connection back between polls
    out = []
    for row in wanted:
        of_row = audience.get(row.therapy_id or "")
        if reader.sees_event(row.therapy_id, row.site_id, of_row):
            out.append((row, reader.view(row.data or {}, of_row)))
    return out


def _events(
    cursor: Cursor,
    reader: outbox.Reader,
    patterns: list[str] | None,
    ringing: webhooks.CommitBell,
    source: str,
    *,
    heartbeat: float,
    poll: float,
    lifetime: float,
) -> Iterator[str]:
    """The SSE text of one connection: events as they commit, heartbeats in between, until ``lifetime`` ends."""
    seen = ringing.rings
    started = last_sent = time.monotonic()
    yield f"retry: {RETRY_MILLISECONDS}\n: stream after event {cursor.after}\n\n"
    while time.monotonic() - started < lifetime:
        rows = cursor.fetch()
        for row in rows:
            cursor.advance(row.id)
        for row, data in _sent(rows, reader, patterns):
            body = webhooks.cloud_event_json(row, source, data).decode()
            last_sent = time.monotonic()
            yield f"id: {row.id}\ndata: {body}\n\n"
        cursor.forget_old_gaps()
        if len(rows) == BATCH:
            continue
        if time.monotonic() - last_sent >= heartbeat:
            last_sent = time.monotonic()
            yield ": heartbeat\n\n"
        remaining = lifetime - (time.monotonic() - started)
        seen = ringing.wait(seen, max(0.0, min(poll, heartbeat, remaining)))


def _slots(app: Flask) -> threading.BoundedSemaphore:
    """The stream slots of this process."""
    with _slots_lock:
        return app.extensions.setdefault(
            "tether_event_streams", threading.BoundedSemaphore(max(1, int(app.config["EVENTS_MAX_STREAMS"])))
        )


def open_stream(user: User, after: int | None, patterns: list[str] | None = None) -> Response:
    """The streaming response of the events ``user`` may see (a therapy's when one of their sites is one of its
    parties, others of their sites or of none), with the patient reference withheld unless they may know it,
    of ``patterns`` (None: every type), after the outbox id ``after`` (None: from the newest event now on).

    429 ``too_many_requests`` when this process has no free stream slot; the slot is given back when the
    stream ends or the client goes.
    """
    reader = outbox.Reader.user(user)
    if after is None:
        after = int(db.session.execute(select(func.max(OutboxEvent.id))).scalar() or 0)
    cursor = Cursor(after)
    db.session.rollback()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    heartbeat, poll = float(config["EVENTS_HEARTBEAT_SECONDS"]), float(config["EVENTS_POLL_SECONDS"])
    lifetime, source = float(config["EVENTS_STREAM_SECONDS"]), str(config["EVENT_SOURCE"])
    slots = _slots(app)
    if not slots.acquire(blocking=False):
        raise ApiError(
            "Too many live event streams are open on this server; try again shortly.",
            status=429,
            code="too_many_requests",
        )
    released = threading.Event()

    def release() -> None:
        """Give the stream's slot back (once)."""
        if not released.is_set():
            released.set()
            slots.release()

    def generate() -> Iterator[str]:
        """The stream, releasing its slot when it ends or the client goes."""
        try:
            yield from _events(
                cursor, reader, patterns, webhooks.bell(app), source, heartbeat=heartbeat, poll=poll, lifetime=lifetime
            )
        finally:
            release()

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(release)
    return response
