"""Request ids: the caller's X-Request-ID (when it is a plain token) or a fresh one, sent back and named in every
log line of the request; JSON log lines for collectors."""

from __future__ import annotations

import io
import json
import logging
import re

from server import logs


def test_a_request_keeps_a_plain_id_and_gets_one_otherwise(app, api, world):
    client = app.test_client()
    assert client.get("/api/v1/health", headers={"X-Request-ID": "lb-7f3a.2"}).headers["X-Request-ID"] == "lb-7f3a.2"
    fresh = client.get("/api/v1/health").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    odd = client.get("/api/v1/health", headers={"X-Request-ID": "two words; <script>"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", odd), "an id that is not a plain token is replaced"


def test_json_log_lines_name_the_request():
    from flask import Flask

    app = Flask("probe")
    app.config.update(LOG_FORMAT="json")
    logs.init_app(app)
    out = io.StringIO()
    handler = logs.handler("json")
    handler.stream = out
    probe = logging.getLogger("server.probe")
    probe.addHandler(handler)
    try:
        with app.test_request_context("/x", headers={"X-Request-ID": "req-42"}):
            app.preprocess_request()
            probe.warning("something to look at: %s", "a detail")
        probe.warning("outside any request")
    finally:
        probe.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["request_id"], first["level"], first["message"]) == (
        "req-42",
        "WARNING",
        "something to look at: a detail",
    )
    assert second["request_id"] == "-" and first["logger"] == "server.probe"
