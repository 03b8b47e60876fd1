"""Electronic signatures (21 CFR 11.50, 11.70, 11.200): checking the signer, recording and showing signatures.

A signature is re-entered for every signing: the signer's password plus the meaning the diagram asks for,
which may follow the decision recorded in the form (``release_decision: released=approval,
rejected=rejection``: releasing signs with the meaning "approval", rejecting with "rejection").
Its record holds the printed name, the time, the meaning and the SHA-256 of exactly what was signed (the
task's identity, the data it recorded, the meaning and the signer). Whenever a signature is shown, that hash
is computed again from the task as it is stored now, so a signature whose signed data changed afterwards
(a correction, or a change behind the server's back) shows as invalid.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from engine.definition import choice_text
from server.access.auth import verify_password
from server.errors import Invalid, Unauthorized
from server.store import audit
from server.store.extensions import db
from server.store.models import Signature, TaskRecord, Therapy, User
from server.store.uow import unit_of_work

MAX_FAILED_SIGNATURES = 5


def _moment(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def content_hash(
    *,
    task_id: str,
    therapy_id: str,
    coi: str,
    activity_id: str,
    data: Any,
    meaning: str,
    signer: str,
    printed_name: str,
    signed_at: datetime,
) -> str:
    """SHA-256 over a canonical JSON of what is signed: task identity, its data, meaning, signer and time."""
    content = {
        "task_id": task_id,
        "therapy_id": therapy_id,
        "coi": coi,
        "activity_id": activity_id,
        "data": data if data is not None else {},
        "meaning": meaning,
        "signer": signer,
        "printed_name": printed_name,
        "signed_at": _moment(signed_at),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _hash_for(signature: Signature, task: TaskRecord, data: Any) -> str:
    return content_hash(
        task_id=task.id,
        therapy_id=task.therapy_id,
        coi=task.therapy.coi,
        activity_id=task.activity_id,
        data=data,
        meaning=signature.meaning,
        signer=signature.signer_username,
        printed_name=signature.printed_name,
        signed_at=signature.signed_at,
    )


def signature_rule(task: TaskRecord) -> tuple[str | None, dict[str, str]]:
    """The form field whose value sets the meaning of ``task``'s signature, and each value's meaning; (None, {})
    when the diagram declares one meaning for the task."""
    definition = task.therapy.definition
    declared = ((definition.info or {}).get("user_tasks") or {}).get(task.activity_id) or {}
    return declared.get("signature_field"), dict(declared.get("signature_meanings") or {})


def meaning_for(task: TaskRecord, data: Any) -> str | None:
    """The meaning a signature of ``task`` with ``data`` carries: the one its decision field's value selects when
    the diagram declares a meaning per value, else the task's one meaning."""
    if not task.signature:
        return None
    field, meanings = signature_rule(task)
    if field and isinstance(data, dict) and data.get(field) is not None:
        return meanings.get(choice_text(data[field]), task.signature)
    return task.signature


def check_signer(user: User, task: TaskRecord, signature: dict | None, data: Any = None) -> None:
    """Check a signing attempt for ``task`` with the form ``data`` before anything changes.

    422 when the signature is missing or has another meaning than the one ``data`` selects; 401
    ``account_locked`` for a locked account; 401 ``signature_failed`` for a wrong password. Every failed attempt
    is audited in its own transaction, and the fifth failure in a row locks the account until an administrator
    unlocks it.
    """
    expected = meaning_for(task, data)
    field, _meanings = signature_rule(task)
    chosen = f" ({field} is '{choice_text(data[field])}')" if field and isinstance(data, dict) and field in data else ""
    if signature is None:
        raise Invalid(
            f"This task needs an electronic signature with the meaning '{expected}'{chosen}: send "
            "your password and the meaning.",
            code="signature_required",
            details={"field": "signature", "meaning": expected},
        )
    if signature.get("meaning") != expected:
        raise Invalid(
            f"The signature's meaning must be '{expected}'{chosen}.",
            code="signature_meaning",
            details={"field": "signature.meaning", "meaning": expected},
        )
    if user.locked:
        _audit_failure(user, task, signature["meaning"], "account_locked")
        raise Unauthorized(
            "Your account is locked after repeated failed signatures; ask an administrator.", code="account_locked"
        )
    if not verify_password(user, signature.get("password") or ""):
        _audit_failure(user, task, signature["meaning"], "wrong_password")
        raise Unauthorized(
            "The password is wrong; the task was not signed.",
            code="signature_failed",
            details={"failed_in_a_row": user.failed_signatures, "account_locked": bool(user.locked)},
        )


def _audit_failure(user: User, task: TaskRecord, meaning: str, reason: str) -> None:
    """Count and audit one failed signing attempt; lock the account at the fifth in a row."""
    with unit_of_work():
        locking = False
        if reason == "wrong_password":
            user.failed_signatures = (user.failed_signatures or 0) + 1
            locking = not user.locked and user.failed_signatures >= MAX_FAILED_SIGNATURES
            user.locked = user.locked or locking
        audit.append(
            user.username,
            "signature.failed",
            "task",
            task.id,
            therapy_id=task.therapy_id,
            site_id=task.site_id,
            data={
                "meaning": meaning,
                "reason": reason,
                "activity_id": task.activity_id,
                "failed_in_a_row": user.failed_signatures,
                "account_locked": bool(user.locked),
            },
        )
        if locking:
            audit.append(
                "system",
                "user.locked",
                "user",
                str(user.id),
                reason="repeated failed signatures",
                data={"username": user.username, "failed_in_a_row": user.failed_signatures},
            )


def apply_signature(task: TaskRecord, data: dict, signer: User, signed_at: datetime) -> Signature:
    """Record ``signer``'s signature of ``task`` with ``data``; call inside the completing transaction."""
    signature = Signature(
        therapy_id=task.therapy_id,
        task_id=task.id,
        signer_id=signer.id,
        signer_username=signer.username,
        printed_name=signer.display_name,
        meaning=meaning_for(task, data),
        signed_at=signed_at,
        content_hash="",
    )
    signature.content_hash = _hash_for(signature, task, data)
    db.session.add(signature)
    db.session.flush()
    signer.failed_signatures = 0
    audit.append(
        signer.username,
        "signature.applied",
        "task",
        task.id,
        therapy_id=task.therapy_id,
        site_id=task.site_id,
        data={
            "signature_id": signature.id,
            "signer": signer.username,
            "printed_name": signer.display_name,
            "meaning": signature.meaning,
            "signed_at": _iso(signed_at),
            "signed_hash": signature.content_hash,
            "activity_id": task.activity_id,
        },
    )
    return signature


def is_valid(signature: Signature, task: TaskRecord | None) -> bool:
    """Whether the signed task still holds exactly what was signed."""
    if task is None or task.status != "completed":
        return False
    return _hash_for(signature, task, task.data) == signature.content_hash


def signature_view(signature: Signature, task: TaskRecord | None) -> dict:
    """A signature as the API and the record show it: who, when, what it means, and whether it still holds."""
    return {
        "id": signature.id,
        "task_id": signature.task_id,
        "therapy_id": signature.therapy_id,
        "activity_id": task.activity_id if task else None,
        "task_name": task.name if task else None,
        "signer": signature.signer_username,
        "printed_name": signature.printed_name,
        "meaning": signature.meaning,
        "signed_at": _iso(signature.signed_at),
        "content_hash": signature.content_hash,
        "valid": is_valid(signature, task),
    }


def signatures_for(therapy: Therapy) -> list[dict]:
    """Every signature of ``therapy`` in signing order, each with ``valid``."""
    rows = db.session.execute(
        select(Signature, TaskRecord)
        .outerjoin(TaskRecord, TaskRecord.id == Signature.task_id)
        .where(Signature.therapy_id == therapy.id)
        .order_by(Signature.signed_at, Signature.id)
    ).all()
    return [signature_view(signature, task) for signature, task in rows]


def signatures_for_task(task: TaskRecord) -> list[dict]:
    """The signatures of one task (normally none or one)."""
    rows = (
        db.session.execute(
            select(Signature).where(Signature.task_id == task.id).order_by(Signature.signed_at, Signature.id)
        )
        .scalars()
        .all()
    )
    return [signature_view(signature, task) for signature in rows]
