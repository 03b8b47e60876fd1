"""``Idempotency-Key``: a repeated POST with the same key from the same caller gets the first answer."""

from __future__ import annotations

import functools

from flask import g, jsonify, request
from sqlalchemy import delete, select

from .errors import ApiError, Conflict, Invalid
from .extensions import db
from .models import IdempotencyRecord
from .uow import unit_of_work

IN_PROGRESS = 0


def idempotent(view):
    """Decorator for state-changing POSTs; the key is reserved before the work and answered after it."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if not key:
            return view(*args, **kwargs)
        if len(key) > 200:
            raise Invalid("Idempotency-Key is longer than 200 characters.", code="invalid_idempotency_key")
        user_id = g.user.id
        existing = _find(user_id, key)
        if existing is None:
            try:
                with unit_of_work():
                    db.session.add(IdempotencyRecord(user_id=user_id, key=key, method=request.method,
                                                     path=request.path, status=IN_PROGRESS, body={}))
            except Conflict:
                existing = _find(user_id, key)
        if existing is not None:
            if existing.method != request.method or existing.path != request.path:
                raise Conflict("This Idempotency-Key was used for another request.", code="idempotency_key_reused")
            if existing.status == IN_PROGRESS:
                raise Conflict("A request with this Idempotency-Key is still being handled.",
                               code="idempotency_in_progress")
            response = jsonify(existing.body)
            response.status_code = existing.status
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            result = view(*args, **kwargs)
        except ApiError as exc:
            _finish(user_id, key, exc.status, {"error": {"code": exc.code, "message": exc.message,
                                                         "details": exc.details}})
            raise
        except Exception:
            db.session.rollback()
            with unit_of_work():
                db.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id,
                                                                   IdempotencyRecord.key == key))
            raise
        response = result if not isinstance(result, tuple) else jsonify(result[0])
        status = result[1] if isinstance(result, tuple) else response.status_code
        body = result[0] if isinstance(result, tuple) else response.get_json()
        _finish(user_id, key, status, body)
        return result

    return wrapper


def _find(user_id: int, key: str) -> IdempotencyRecord | None:
    return db.session.execute(select(IdempotencyRecord).where(
        IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)).scalar_one_or_none()


def _finish(user_id: int, key: str, status: int, body) -> None:
    """Store the first answer; a writing transaction from the start, so SQLite never refuses the upgrade."""
    db.session.rollback()
    with unit_of_work():
        record = _find(user_id, key)
        if record is not None:
            record.status, record.body = status, body
