"""An admin's way out of an incident: run the step again now, or resolve it with a reason.

Both take the incident's therapy under a row lock (on PostgreSQL) so no timer steps it meanwhile, and run in
one transaction with their audit entries and the therapy's new state.
"""

from __future__ import annotations

from typing import Any

from engine.errors import EngineError
from server.clock import clock
from server.errors import Conflict
from server.store.models import Incident
from server.store.uow import unit_of_work
from server.workflow.incidents import audit_incident, claim, close, still_unresolved
from server.workflow.therapies import apply_outcome, runtime_for


def retry(incident: Incident, actor: str) -> Incident:
    """Run the incident's task again now (an admin's retry); a new failure keeps the incident open."""
    still_unresolved(incident)
    with unit_of_work():
        therapy = claim(incident)
        audit_incident(incident, therapy, actor, "incident.retried", attempts_so_far=incident.attempts)
        try:
            runtime = runtime_for(therapy, actor)
            outcome = (
                runtime.fire_timers(therapy.state)
                if incident.task_id is None
                else runtime.retry_task(therapy.state, incident.task_id)
            )
        except EngineError as exc:
            raise Conflict(
                f"The step cannot run again: {exc.message}",
                code="incident_not_retryable",
                details={"incident_id": incident.id},
            ) from None
        if incident.task_id is None:
            close(incident, therapy, actor, clock()(), "retried", None)
        apply_outcome(therapy, outcome, actor)
    return incident


def resolve(incident: Incident, reason: str, actor: str, result: Any = None) -> Incident:
    """Close the incident with a reason: its task counts as done by hand (``result`` as its result) and the
    therapy runs on."""
    still_unresolved(incident)
    with unit_of_work():
        therapy = claim(incident)
        now = clock()()
        close(incident, therapy, actor, now, "resolved", reason)
        if therapy.status == "active":
            outcome = runtime_for(therapy, actor).inspect(therapy.state)
            if incident.task_id in {t.task_id for t in outcome.failed_tasks}:
                outcome = runtime_for(therapy, actor).skip_task(therapy.state, incident.task_id, result)
            apply_outcome(therapy, outcome, actor)
    return incident
