"""`http`: calls an external HTTP API (MES, ERP, LIMS, courier).

Parameters: `method` (default `"GET"`), `url` (required, http or https), `headers` (object), `json` (body),
`timeout` (seconds, default 10). Result: `{"status": 200, "body": <JSON or text>}`. A non-2xx answer fails
the task with the status and an excerpt of the body. The url must reach a public address, or one in the networks
the server allows (`TETHER_HTTP_OPERATOR_NETWORKS`): never the server's own loopback or cloud metadata otherwise.
"""

from __future__ import annotations

from urllib.parse import urlparse

from flask import current_app, has_app_context

from server.integration.outbound import Destinations, guarded_session
from server.integration.webhooks import PrivateDestination

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
# Each parameter (an expression) with what the studio says of it; REQUIRED must be given.
PARAMETERS = {
    "url": "absolute http(s) URL, e.g. 'https://mes.example/orders' or mes_url",
    "method": "'GET' (default), 'POST', 'PUT', 'PATCH' or 'DELETE'",
    "headers": "an object of request headers, e.g. {'X-Source': 'tether'}",
    "json": "the request body, e.g. {'coi': coi}",
    "timeout": "seconds to wait for the answer (default 10)",
}
REQUIRED = {"url"}


def run(context, params: dict) -> dict:
    """Make the request and return its status and body."""
    method = str(params.get("method") or "GET").upper()
    url = str(params.get("url") or "")
    if method not in METHODS:
        raise ValueError(f"http method must be one of {', '.join(sorted(METHODS))}, got '{method}'")
    if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        raise ValueError(f"http needs an absolute http(s) url, got '{url}'")
    allowed = current_app.config.get("HTTP_OPERATOR_NETWORKS") if has_app_context() else None
    destinations = Destinations.parse(allowed, purpose="http service tasks")
    try:
        destinations.check_url(url)
    except PrivateDestination as exc:
        raise RuntimeError(f"{exc} Allow its network with TETHER_HTTP_OPERATOR_NETWORKS.") from None
    with guarded_session(destinations) as session:
        response = session.request(
            method,
            url,
            headers=params.get("headers") or {},
            json=params.get("json"),
            timeout=float(params.get("timeout") or 10),
        )
    try:
        body = response.json()
    except ValueError:
        body = response.text[:2000]
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"{method} {url} answered {response.status_code}: {str(body)[:300]}")
    return {"status": response.status_code, "body": body}
