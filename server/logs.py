"""Request ids and the server's log lines.

Every request has an id: the caller's ``X-Request-ID`` when it is a plain token (1 to 100 letters, digits, ``.``,
``_`` or ``-``), else a fresh one; the answer carries it back in ``X-Request-ID``, and every log line written while
the request is served names it, so a proxy's, a client's and Tether's lines of one request can be found together.
With ``TETHER_LOG_FORMAT=json`` each log line is one JSON object (``time``, ``level``, ``logger``, ``message``,
``request_id`` and ``error`` with the traceback when there is one), for log collectors; ``text`` (the default)
writes the same as plain lines. ``TETHER_LOG_LEVEL`` sets the level (``INFO``).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-ID"
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,100}")


def request_id() -> str | None:
    """The current request's id (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt``: ``json`` or ``text``."""
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


def handler(fmt: str) -> logging.Handler:
    """A stderr handler writing ``fmt`` (``json`` or ``text``) lines with the request id."""
    out = logging.StreamHandler()
    out.addFilter(RequestIdFilter())
    out.setFormatter(formatter(fmt))
    return out


def init_app(app: Flask) -> None:
    """Give each request its id; configure the ``server`` and ``engine`` loggers as the settings say."""
    fmt = str(app.config.get("LOG_FORMAT") or "text").lower()
    level = str(app.config.get("LOG_LEVEL") or "INFO").upper()
    for name in ("server", "engine"):
        logger = logging.getLogger(name)
        ours = [h for h in logger.handlers if getattr(h, "tether", False)]
        if ours:
            ours[0].setFormatter(formatter(fmt))
        else:
            out = handler(fmt)
            out.tether = True  # type: ignore[attr-defined]
            logger.addHandler(out)
        logger.setLevel(level)

    @app.before_request
    def _take_request_id() -> None:
        given = request.headers.get(HEADER, "")
        g.request_id = given if _PLAIN.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _give_request_id(response: Response) -> Response:
        if has_request_context() and g.get("request_id"):
            response.headers[HEADER] = g.request_id
        return response
