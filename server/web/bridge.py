"""Carrying out a page's action with the API's own handler, as the logged-in user.

A form on a page that changes something (complete a task, start or cancel a therapy, deploy a diagram,
acknowledge an alert) is turned into the request an API client would send and handed to the API's view
for that method and path, with the session's user as the caller. Every check the API makes (roles,
sites, form validation, signatures, scans, audit of refusals) is therefore the same for
the pages, and there is no second implementation of any use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from server.store.extensions import db


@dataclass
class ApiAnswer:
    """What the API answered: status and JSON body (an error body when the status is 4xx or 5xx)."""

    status: int
    body: Any = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the API accepted the request."""
        return 200 <= self.status < 300

    @property
    def error(self) -> dict:
        """The ``error`` object of a refusal (code, message, details), or an empty dict."""
        if self.ok or not isinstance(self.body, dict):
            return {}
        return self.body.get("error") or {}

    @property
    def message(self) -> str:
        """The refusal's one sentence."""
        return self.error.get("message") or f"The request was refused ({self.status})."


def has_route(method: str, path: str) -> bool:
    """Whether the API serves ``method`` on ``path`` (lets a page use an endpoint only once it exists)."""
    adapter = current_app.url_map.bind("localhost")
    try:
        adapter.match(path, method=method)
    except (NotFound, MethodNotAllowed):
        return False
    except HTTPException:
        return True
    return True


def forward(
    method: str,
    path: str,
    *,
    json: dict | None = None,
    data: dict | None = None,
    headers: dict | None = None,
    query: dict | None = None,
) -> Response:
    """Hand one request to the API's handler as the session's user; its response as the API sent it.

    A streamed response (the live event stream) keeps its own request context while it streams.
    """
    environ = {"REMOTE_ADDR": request.remote_addr or "127.0.0.1"}
    user = g.user
    with current_app.test_request_context(
        path,
        method=method,
        json=json,
        data=data,
        headers=headers or {},
        query_string=query,
        environ_base=environ,
        base_url=request.host_url,
    ):
        g.user = user
        response = current_app.full_dispatch_request()
    g.user = user
    return response


def call(method: str, path: str, *, json: dict | None = None, data: dict | None = None) -> ApiAnswer:
    """Send one request to the API's handler as the session's user and return its answer."""
    response = forward(method, path, json=json, data=data)
    db.session.rollback()  # whatever the handler left open (also after a failure) is closed before the page reads
    body = response.get_json(silent=True) if response.is_json else {}
    return ApiAnswer(response.status_code, body if body is not None else {})
