"""Request limits: how often a client may try to log in (429), and how large a request body may be (413).

Login views are marked with ``@login_limited``; every marked view (the API's ``POST /auth/token``, the web
login page) shares one budget per client address, ``TETHER_LOGIN_RATE_LIMIT`` (Flask-Limiter, in-memory:
each server process counts on its own). Uploads (``multipart/form-data``) may be up to
``TETHER_MAX_UPLOAD_BYTES``; every other body (JSON, forms) up to ``TETHER_MAX_JSON_BYTES``. Before a 413 is
answered, the rest of the refused body (up to ``TETHER_DISCARD_BODY_BYTES``) is read and thrown away: a client
that sends its whole body before reading the answer then gets the 413 instead of a broken connection.
"""

from __future__ import annotations

import threading
from typing import cast

from flask import Flask, current_app, jsonify, request
from flask.typing import RouteCallable
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from .errors import ApiError, error_body

_MARK = "_tether_login_limited"


class TooLarge(ApiError):
    """413: the request body is larger than the limit for its kind."""

    status, code = 413, "too_large"


def login_limited(view):
    """Mark a login view: its attempts count against the per-address login rate limit."""
    setattr(view, _MARK, True)
    return view


def init_app(app: Flask) -> Limiter:
    """Install the body size check and the login rate limit on ``app`` (each app counts on its own)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _limit_body_size)  # before anything reads a body
    app.after_request(_discard_refused_body)
    lock = threading.Lock()
    state = {"marked": False}

    def mark_login_views() -> None:
        """Apply the login limit to every marked view, once, whichever blueprint registered it."""
        if state["marked"]:
            return
        with lock:
            if state["marked"]:
                return
            login = limiter.shared_limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], scope="login")
            for endpoint, view in list(app.view_functions.items()):
                if getattr(view, _MARK, False):
                    # Flask-Limiter types its decorator as sync-or-async; these views are sync and stay so.
                    app.view_functions[endpoint] = cast(RouteCallable, login(view))
            state["marked"] = True

    app.before_request(mark_login_views)  # runs before the limiter's own check, registered below
    limiter = Limiter(
        get_remote_address, app=app, storage_uri="memory://", headers_enabled=True, strategy="moving-window"
    )
    app.extensions["tether_limiter"] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    return limiter


def _too_many_requests(exc: RateLimitExceeded):
    """429 with the API's error body; Flask-Limiter adds ``Retry-After`` and the ``X-RateLimit-*`` headers."""
    response = jsonify(
        error_body(
            "too_many_requests",
            "Too many login attempts from this address; wait and try again.",
            {"limit": str(exc.limit.limit) if exc.limit else None},
        )
    )
    response.status_code = 429
    return response


def _limit_body_size() -> None:
    """413 before anything is read when a body is larger than allowed for its kind."""
    upload_limit = int(current_app.config["MAX_CONTENT_LENGTH"])  # always set by the app factory
    json_limit = int(current_app.config["MAX_JSON_BYTES"])
    limit = upload_limit if request.mimetype == "multipart/form-data" else min(json_limit, upload_limit)
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(
            f"The request body is {length} bytes; at most {limit} bytes are accepted here.",
            details={"limit_bytes": limit, "content_length": length},
        )
    request.max_content_length = limit  # a body sent without Content-Length is cut off at the limit too


def _discard_refused_body(response):
    """After a 413, read and drop what is left of the body (bounded), so the client can read the answer.

    A server that closes the connection with unread data in it makes the kernel reset the connection, and a
    client still sending (urllib, curl without ``Expect``) sees a broken pipe rather than the 413. A body
    longer than ``DISCARD_BODY_BYTES`` is left unread and the connection is closed after the answer.
    """
    if response.status_code != 413:
        return response
    budget = int(current_app.config["DISCARD_BODY_BYTES"])
    stream = request.environ.get("wsgi.input")
    length = request.content_length
    if stream is None or (length is not None and length > budget):
        response.headers["Connection"] = "close"
        return response
    remaining = budget if length is None else length
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, 64 * 1024))
            if not chunk:
                return response
            remaining -= len(chunk)
    except (OSError, ValueError):  # the client went away, or the server's stream is already closed
        pass
    if length is None:  # a body without Content-Length may go on past the budget
        response.headers["Connection"] = "close"
    return response
