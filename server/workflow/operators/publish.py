"""`publish`: emits a custom event through the outbox (and so to webhooks).

Parameters: `type` (required, e.g. `"mes.order.created"`), `data` (optional object). Result: `{"published": type}`.
"""

from __future__ import annotations

import re

_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
PARAMETERS = {
    "type": "a dotted lower-case event type, e.g. 'mes.order.created'",
    "data": "an object sent with the event, e.g. {'coi': coi}",
}
REQUIRED = {"type"}


def run(context, params: dict) -> dict:
    """Write the event to the outbox in the step's transaction."""
    from server.integration import outbox
    from server.store import audit

    event_type = str(params.get("type") or "")
    if not _TYPE.match(event_type):
        raise ValueError(
            f"publish needs a dotted lower-case event type such as 'mes.order.created', got '{event_type}'"
        )
    data = params.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("publish needs 'data' to be an object")
    therapy = context.therapy
    outbox.emit(event_type, data, therapy_id=therapy.id, site_id=therapy.site_id)
    audit.append(
        context.actor,
        "event.published",
        "therapy",
        therapy.id,
        data={"type": event_type, **data},
        therapy_id=therapy.id,
        site_id=therapy.site_id,
    )
    return {"published": event_type}
