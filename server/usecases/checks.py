"""What every handler checks first: what the caller may see (sites) and may do (roles), and the audit of a refusal.

Something the caller may not see does not exist for them: it is 404, as for an unknown id. A refusal of a
state-changing command (403, 409) is written to the audit trail before the error is answered, once: a handler
that records its own, more precise refusal (``task.refused``, ``message.refused``, ``coi.mismatch``) is not
recorded a second time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from flask import has_request_context
from sqlalchemy.orm import defer, joinedload

from engine.errors import EngineError
from server.access.auth import (
    audit_refused_request,
    can_see_site,
    can_see_therapy,
    refusal_audited_on_answer,
    visible_site_ids,
)
from server.errors import ApiError, Forbidden, Invalid, NotFound, engine_error_status
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, TaskRecord, Therapy, User
from server.workflow import incidents


class Command(Protocol):
    """A command: who asks is ``by``."""

    @property
    def by(self) -> User: ...


C = TypeVar("C", bound=Command)
R = TypeVar("R")


def visible_therapy(user: User, therapy_id: str, *, state: bool = True) -> Therapy:
    """The therapy if ``user`` may see it (one of their sites takes part in it); 404 otherwise (another
    network's therapy does not exist for them).

    With ``state=False`` its engine state is not loaded (a read that shows the therapy but does not step it).
    """
    therapy = db.session.get(Therapy, therapy_id, options=() if state else (defer(Therapy.state),))
    if therapy is None or not can_see_therapy(user, therapy):
        raise NotFound("No such therapy.", details={"therapy_id": therapy_id})
    return therapy


def visible_task(user: User, task_id: str) -> TaskRecord:
    """The task (with its therapy) if ``user`` may see it: a user of the task's site, or, while its party has no
    site yet, of the treatment centre (which names one); 404 otherwise, as for a task that does not exist."""
    therapy = joinedload(TaskRecord.therapy, innerjoin=True)
    task = db.session.get(
        TaskRecord,
        task_id,
        # in the same query, what the checks and a completion's step read: the therapy, the sites of its parties,
        # its ready task rows, and whether it has open incidents (a step that opens none need not read them then)
        options=(
            therapy.joinedload(Therapy.party_rows),
            therapy.joinedload(Therapy.ready_task_rows),
            therapy.with_expression(Therapy.has_open_incidents, incidents.any_unresolved(Therapy.id)),
        ),
    )
    if task is None or not sees_task(user, task):
        raise NotFound("No such task.", details={"task_id": task_id})
    return task


def sees_task(user: User, task: TaskRecord) -> bool:
    """Whether ``user`` may see the task: a user of its site, or, while its party has no site yet, of the
    therapy's treatment centre."""
    return can_see_site(user, task.site_id if task.site_id is not None else task.therapy.site_id)


def visible_alert(user: User, alert_id: str) -> Alert:
    """The alert if ``user`` may see its site (an alert without a site: unscoped users only); 404 otherwise."""
    alert = db.session.get(Alert, alert_id)
    if alert is not None:
        if alert.site_id is None and visible_site_ids(user) is None:
            return alert
        if alert.site_id is not None and can_see_site(user, alert.site_id):
            return alert
    raise NotFound("No such alert.", details={"alert_id": alert_id})


def check_treatment_site(user: User, therapy: Therapy, doing: str) -> None:
    """403 unless ``user`` works at the therapy's treatment centre (or is not scoped to sites): the centre
    that owns the therapy decides ``doing`` (cancelling it, handing its parties to other sites)."""
    if not can_see_site(user, therapy.site_id):
        raise Forbidden(
            f"Only the treatment centre ({therapy.site.code}) {doing}.",
            details={"site": therapy.site.code},
        )


def required_text(value: object, field: str, longest: int) -> str:
    """``value`` when it is text of at most ``longest`` characters, not only spaces; 422 naming ``field``
    otherwise (the answer the API's body schemas give, so a page and an integration meet one rule)."""
    text = value if isinstance(value, str) else ""
    if not text.strip() or len(text) > longest:
        raise Invalid(
            "The request is not valid; see the fields.",
            code="invalid_request",
            details={"fields": {field: [f"Write 1 to {longest} characters."]}},
        )
    return text


def audits_refusals(handler: Callable[[C], R]) -> Callable[[C], R]:
    """Decorate a handler: a 403 or 409 it raises is audited (unless already recorded) and raised on, and an
    engine error that stands for a refusal (a task no longer ready, a message not awaited) is raised as the
    ``ApiError`` it stands for, so every caller meets one kind of refusal.

    In a request, the entry names the request's method, path and subject (``server.access.auth``); an API
    endpoint writes it once the request is answered (after its idempotency record commits), a page right
    here. Without a request (the command line, the demo) the entry names the command.
    """

    @functools.wraps(handler)
    def handle(command: C) -> R:
        try:
            try:
                return handler(command)
            except EngineError as exc:
                status = engine_error_status(exc)
                if status >= 500:
                    raise
                raise ApiError(exc.message, code=exc.code, status=status, details=exc.as_details()) from exc
        except ApiError as exc:
            if exc.status in (403, 409):
                _record_refusal(command, exc)
            raise

    return handle


def _record_refusal(command: Any, exc: ApiError) -> None:
    if refusal_audited_on_answer():
        return
    if has_request_context():
        audit_refused_request(command.by, exc)
        return
    db.session.rollback()
    audit.audit_refusal(
        command.by.username,
        "request.refused",
        "command",
        type(command).__name__,
        status=exc.status,
        code=exc.code,
        message=exc.message,
        data={"command": type(command).__name__},
    )
