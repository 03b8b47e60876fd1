"""``Idempotency-Key``: a repeated POST with the same key from the same caller gets the first answer.

The key is written in the same transaction as the request's effect (``uow.enclosing_transaction``): the
view runs, its answer is stored under the key, and both commit together or not at all. So a key always
resolves either to a committed answer, replayed for every repeat, or to nothing, in which case a repeat
simply does the work; never to a request "still in progress" that a crash left behind.

Refusals are answers too (a 422 stays a 422 for that key), and what the refusal itself recorded (the audit
entry of a refused message, the alert of a wrong scan) commits with it. Refusals that only say "not now"
(the database was busy, a concurrent change won, 429, a server error) are not stored and change nothing,
so a retry with the same key runs again.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from flask import current_app, g, jsonify, request
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from server.errors import ApiError, Conflict, Invalid, error_body
from server.store.extensions import db
from server.store.models import IdempotencyRecord
from server.store.uow import Enclosing, conflict_for, enclosing_transaction

MAX_KEY_LENGTH = 200
# Written only inside the transaction that stores the answer, so never seen by anyone else; rows with this
# status left by earlier versions (which reserved keys in a transaction of their own) mean nothing committed.
UNANSWERED = 0
# 409 codes that mean "not now" rather than "no": a retry may well succeed.
TRANSIENT_CONFLICTS = frozenset({"busy", "version_conflict", "conflict", "delivery_in_progress"})


class Answer(NamedTuple):
    """A stored answer, read out of its row (so it outlives the transaction that read it)."""

    method: str
    path: str
    status: int
    body: Any


def idempotent(view):
    """Decorator for state-changing POSTs: under an ``Idempotency-Key`` the request commits with its answer."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if not key:
            return view(*args, **kwargs)
        if len(key) > MAX_KEY_LENGTH:
            raise Invalid(
                f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters.",
                code="invalid_idempotency_key",
                details={"header": "Idempotency-Key"},
            )
        user_id = g.user.id
        answer = _answer(user_id, key)
        if answer is not None:
            return _replay(answer)
        try:
            return _run_once(view, args, kwargs, user_id, key)
        except (StaleDataError, IntegrityError, OperationalError) as exc:
            conflict = conflict_for(exc)
            if conflict is None:
                raise
            raise conflict from None

    return wrapper


def transient(status: int, code: str | None) -> bool:
    """Whether an answer only says "not now" (and so is not stored under the key)."""
    return status >= 500 or status == 429 or (status == 409 and code in TRANSIENT_CONFLICTS)


def _run_once(view, args, kwargs, user_id: int, key: str):
    """Run the view and store its answer under the key, in one transaction; replay when another request won."""
    with enclosing_transaction() as transaction:
        try:
            record = _claim(user_id, key)
        except IntegrityError:  # PostgreSQL: a concurrent request with this key committed first
            transaction.rollback()
            return _replay(_winner(user_id, key))
        if record.status != UNANSWERED:  # answered while this request waited for the write lock
            answer = _answer_of(record)
            transaction.rollback()
            return _replay(answer)
        try:
            result = view(*args, **kwargs)
        except ApiError as exc:
            if transient(exc.status, exc.code):
                raise  # leaving the block rolls back: nothing stored, nothing changed
            _store(record, user_id, key, exc.status, error_body(exc.code, exc.message, exc.details))
            won = _commit(transaction, user_id, key)
            if won is not None:
                return _replay(won)
            raise
        response = current_app.make_response(result)
        body = response.get_json(silent=True)
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        if transient(response.status_code, code):
            return response  # rolled back on leaving the block
        _store(record, user_id, key, response.status_code, body if body is not None else {})
        won = _commit(transaction, user_id, key)
        return _replay(won) if won is not None else response


def _claim(user_id: int, key: str) -> IdempotencyRecord:
    """The key's row inside the request's transaction: its committed answer, or a new unanswered row.

    On PostgreSQL the new row's insert waits for a concurrent request holding the same key and fails with
    ``IntegrityError`` once that one commits; on SQLite the write lock already keeps them apart.
    """
    record = _find(user_id, key)
    if record is not None and record.status != UNANSWERED:
        return record
    if record is not None:  # left by an earlier version: its work never committed with it
        db.session.delete(record)
        db.session.flush()
    record = IdempotencyRecord(
        user_id=user_id, key=key, method=request.method, path=request.path, status=UNANSWERED, body={}
    )
    db.session.add(record)
    db.session.flush()
    return record


def _store(record: IdempotencyRecord, user_id: int, key: str, status: int, body: Any) -> None:
    """Put the answer on the key's row (a new row when the view rolled the whole transaction back)."""
    if not inspect(record).persistent:
        record = IdempotencyRecord(user_id=user_id, key=key, method=request.method, path=request.path)
        db.session.add(record)
    record.status, record.body = status, body


def _commit(transaction: Enclosing, user_id: int, key: str) -> Answer | None:
    """Commit the effect with its answer; the winner's answer when a concurrent request stored one first."""
    try:
        transaction.commit()
    except IntegrityError:
        return _winner(user_id, key)
    return None


def _winner(user_id: int, key: str) -> Answer:
    """The answer a concurrent request with the same key committed (after this one's rollback)."""
    answer = _answer(user_id, key)
    db.session.rollback()
    if answer is None:
        raise Conflict(
            "A request with this Idempotency-Key was handled at the same moment; try again.",
            code="conflict",
            details={"header": "Idempotency-Key"},
        )
    return answer


def _find(user_id: int, key: str) -> IdempotencyRecord | None:
    """The key's row, if any."""
    return db.session.execute(
        select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
    ).scalar_one_or_none()


def _answer_of(record: IdempotencyRecord) -> Answer:
    """A row's answer as plain values."""
    return Answer(record.method, record.path, record.status, record.body)


def _answer(user_id: int, key: str) -> Answer | None:
    """The committed answer stored under the key, or None (also for a row no answer was ever stored in)."""
    record = _find(user_id, key)
    if record is None or record.status == UNANSWERED:
        return None
    return _answer_of(record)


def _replay(answer: Answer):
    """The stored answer again, marked as a replay; 409 when the key was used for another request."""
    if answer.method != request.method or answer.path != request.path:
        raise Conflict(
            "This Idempotency-Key was used for another request.",
            code="idempotency_key_reused",
            details={"header": "Idempotency-Key"},
        )
    response = jsonify(answer.body)
    response.status_code = answer.status
    response.headers["Idempotent-Replayed"] = "true"
    return response
