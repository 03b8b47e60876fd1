"""`notify`: tells the people of a role (optionally at one site) that something needs them.

Parameters: `role` (required), `message` (required), `site` (optional site code; default the therapy's).
Result: `{"notified_role": ..., "site": ...}`. Recorded in the audit trail and as a `notification.sent` event.
"""

from __future__ import annotations

from ..models import ROLES


def run(context, params: dict) -> dict:
    """Record the notification for the role and site; delivery channels hang off the event."""
    from .. import audit, outbox

    role = str(params.get("role") or "").strip()
    message = str(params.get("message") or "").strip()
    if role not in ROLES:
        raise ValueError(f"notify needs a known role, got '{role}'")
    if not message:
        raise ValueError("notify needs a message")
    therapy = context.therapy
    site = params.get("site") or therapy.site.code
    data = {"role": role, "site": site, "message": message, "coi": therapy.coi}
    audit.append(context.actor, "notification.sent", "therapy", therapy.id, data=data, therapy_id=therapy.id,
                 site_id=therapy.site_id)
    outbox.emit("notification.sent", data, therapy_id=therapy.id, site_id=therapy.site_id)
    return {"notified_role": role, "site": site}
