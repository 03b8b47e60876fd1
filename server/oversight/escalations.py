"""Escalations: a non-interrupting boundary timer that fires on a task still open says "this is late".

The engine reports ``task.escalated`` (audited and published like every engine event); here it becomes an
open alert of kind ``escalation`` that names the late task and the role to wake where that role works for the
therapy: at the site of the party the role works for (the courier for logistics, the manufacturer for
manufacturing) when the therapy has one, else at the task's site (its party's; the treatment centre when the
late work is no user task), raised in the same transaction (``alert.raised`` goes out through the outbox).
Nothing external is called from here: e-mail and webhooks are delivered from the outbox after the commit.
"""

from __future__ import annotations

from sqlalchemy import select

from server.oversight.alerts import ROLE_PARTIES, raise_alert
from server.store.extensions import db
from server.store.models import Alert, TaskRecord, Therapy

KIND = "escalation"
# Who is woken when the diagram does not say (the late work is no user task and sits in no role's lane):
# the treatment centre's coordinator owns the therapy.
FALLBACK_ROLE = "coordinator"


def raise_escalation(therapy: Therapy, escalated: dict, actor: str) -> Alert:
    """Raise the alert for one ``task.escalated`` event (its payload) of ``therapy``."""
    late_id = escalated["late_activity_id"]
    late_name = escalated.get("late_activity_name") or late_id
    role = escalated.get("role") or FALLBACK_ROLE
    task = (
        db.session.execute(
            select(TaskRecord).where(
                TaskRecord.therapy_id == therapy.id, TaskRecord.activity_id == late_id, TaskRecord.status == "ready"
            )
        )
        .scalars()
        .first()
    )
    timer = escalated.get("name") or escalated.get("activity_id")
    site = task.site if task is not None and task.site is not None else therapy.site
    acting = next((row.site for row in therapy.party_rows if row.party == ROLE_PARTIES.get(role)), None)
    if acting is not None:  # the role works for a party of the therapy (its courier, its manufacturer): there
        site = acting
    message = f"'{late_name}' is late ({timer}); the {role} role at {site.code} is asked to act."
    data = {
        "late_activity_id": late_id,
        "late_activity_name": late_name,
        "timer_activity_id": escalated.get("activity_id"),
        "timer_name": timer,
        "task_id": task.id if task else None,
        "site": site.code,
    }
    return raise_alert(
        therapy, KIND, message, actor, severity="high", role=role, activity_id=late_id, data=data, site_id=site.id
    )
