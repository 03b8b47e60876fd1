"""`notify`: tells the people of a role (optionally at one site) that something needs them.

Parameters: `role` (required), `message` (required), `site` (optional site code) or `party` (optional: the
site of that party of the therapy; default: the site of the party the role works for, when the therapy has one
(manufacturing, logistics), else the treatment centre),
`severity` (optional: low, medium (default), high or critical). Raises an alert for the role (audited, and
published as `alert.raised`); when `TETHER_SMTP_URL` is set, the active users of that role who work at the
site (or at every site) also get an e-mail once the step has committed. Result:
`{"notified_role": ..., "site": ..., "alert_id": ..., "emailed": N}`.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server.store.models import ROLES, Site, User
from server.workflow.operators import smtp

SEVERITIES = ("low", "medium", "high", "critical")
PARAMETERS = {
    "role": "the role to tell, e.g. 'qa'",
    "message": "what needs them, e.g. 'Batch ready for release review'",
    "severity": "'low', 'medium' (default), 'high' or 'critical'",
    "site": "a site code (default: the site of the party the role works for)",
    "party": "a party of the therapy whose site is told, e.g. 'manufacturing'",
}
REQUIRED = {"role", "message"}


def recipients(role: str, site_code: str) -> list[User]:
    """The active users holding ``role`` who work at ``site_code`` or are not tied to a site."""
    from server.store.extensions import db

    users = db.session.execute(
        select(User).where(User.active.is_(True)).options(selectinload(User.sites)).order_by(User.username)
    ).scalars()
    return [u for u in users if role in (u.roles or []) and (not u.scoped or site_code in u.site_codes)]


def run(context, params: dict) -> dict:
    """Raise the alert and, with SMTP configured, e-mail the role's people after the commit."""
    from server.oversight.alerts import ROLE_PARTIES, raise_alert
    from server.store import audit
    from server.store.extensions import db
    from server.store.uow import after_commit

    role = str(params.get("role") or "").strip()
    message = str(params.get("message") or "").strip()
    severity = str(params.get("severity") or "medium")
    if role not in ROLES:
        raise ValueError(f"notify needs a known role, got '{role}'")
    if not message:
        raise ValueError("notify needs a message")
    if severity not in SEVERITIES:
        raise ValueError(f"notify severity must be one of {', '.join(SEVERITIES)}, got '{severity}'")
    therapy = context.therapy
    party = params.get("party")
    if party is not None and party not in therapy.parties:
        raise ValueError(f"notify names the party '{party}'; the parties are {', '.join(therapy.parties)}")
    acting = therapy.parties.get(ROLE_PARTIES[role]) if role in ROLE_PARTIES else None
    site = str(params.get("site") or (therapy.parties.get(party) if party else None) or acting or therapy.site.code)
    site_id = db.session.execute(select(Site.id).where(Site.code == site)).scalar_one_or_none()
    if site_id is None:
        raise ValueError(f"notify names site '{site}', which is not registered")
    alert = raise_alert(
        therapy,
        "notification",
        message,
        context.actor,
        severity=severity,
        role=role,
        data={"site": site},
        site_id=site_id,
    )
    config = current_app.config
    people = recipients(role, site) if config.get("SMTP_URL") else []  # without mail, nobody needs to be looked up
    addresses = [smtp.address_of(u.username, config["SMTP_RECIPIENT_DOMAIN"]) for u in people]
    emailed = len(addresses)
    audit.append(
        context.actor,
        "notification.sent",
        "therapy",
        therapy.id,
        therapy_id=therapy.id,
        site_id=therapy.site_id,
        data={
            "role": role,
            "site": site,
            "message": message,
            "coi": therapy.coi,
            "alert_id": alert.id,
            "emailed": emailed,
        },
    )
    if emailed:
        mail = smtp.Mail(
            subject=f"[Tether] {role} at {site}: {message[:80]}",
            body=smtp.body_for(message, role, site, therapy.coi, therapy.id),
            to=addresses,
        )
        after_commit(lambda: smtp.send_in_background(config["SMTP_URL"], config["SMTP_FROM"], mail))
    return {"notified_role": role, "site": site, "alert_id": alert.id, "emailed": emailed}
