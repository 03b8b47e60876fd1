"""Corrections of recorded process data, each with its mandatory reason (EU GMP Annex 11 §9).

``POST /therapies/{id}/corrections`` changes one recorded value, named by a dotted path into the therapy's
process data (``collection_volume_ml``, ``qc.result``, ``items.0.lot``). The value changes where the process
itself reads it (the engine state), in the therapy's data and in the completed task that recorded it; the
old and the new value are audited with the reason. A signature over the corrected task no longer matches
what it signed and shows as invalid: a corrected record needs a new review, not an old signature.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sqlalchemy import select

from server.clock import clock, iso
from server.errors import Invalid
from server.store import audit
from server.store.extensions import db
from server.store.models import Correction, Signature, TaskRecord, Therapy
from server.store.uow import unit_of_work
from server.workflow import therapies

# The chain of identity is not process data a correction may touch.
PROTECTED_KEYS = {"coi", "coi_assignment", "patient_reference", "site", "bookings"}
_MISSING = object()


def parse_path(path: str) -> list[str | int]:
    """``qc.result`` -> ``["qc", "result"]``; whole-number segments index lists; 422 for a malformed path."""
    segments: list[str | int] = []
    for part in path.split("."):
        if not part.strip():
            raise Invalid(
                "The path names a value with dots between keys, e.g. 'qc.result'.",
                code="invalid_path",
                details={"field": "path"},
            )
        segments.append(int(part) if part.isdigit() else part)
    first = segments[0]
    if not isinstance(first, str) or first in PROTECTED_KEYS or first.startswith(("_", "spiff__")):
        raise Invalid(
            f"'{first}' cannot be corrected: it is part of the chain of identity or of the engine.",
            code="protected_field",
            details={"field": "path"},
        )
    return segments


def value_at(data: Any, path: list[str | int]) -> Any:
    """The value at ``path`` in ``data``, or ``_MISSING``."""
    for key in path:
        if isinstance(data, dict) and isinstance(key, str) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return _MISSING
    return data


def _with_value(data: dict, path: list[str | int], value: Any) -> dict:
    """A copy of ``data`` with the value at ``path`` replaced."""
    out = copy.deepcopy(data)
    container: Any = out
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value
    return out


def _recording_task(therapy: Therapy, path: list[str | int]) -> TaskRecord | None:
    """The latest completed task whose recorded data holds ``path`` (the record the value came from)."""
    tasks = db.session.execute(
        select(TaskRecord)
        .where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "completed")
        .order_by(TaskRecord.completed_at.desc(), TaskRecord.id)
    ).scalars()
    return next((t for t in tasks if value_at(t.data or {}, path) is not _MISSING), None)


def correction_view(correction: Correction) -> dict:
    """A correction as the therapy detail and the record show it."""
    return {
        "id": correction.id,
        "therapy_id": correction.therapy_id,
        "path": correction.path,
        "old_value": correction.old_value,
        "new_value": correction.new_value,
        "reason": correction.reason,
        "corrected_by": correction.corrected_by,
        "corrected_at": iso(correction.corrected_at),
    }


def corrections_for(therapy: Therapy) -> list[dict]:
    """Every correction of ``therapy``'s data, oldest first."""
    rows = db.session.execute(
        select(Correction).where(Correction.therapy_id == therapy.id).order_by(Correction.corrected_at, Correction.id)
    ).scalars()
    return [correction_view(c) for c in rows]


def correct_value(therapy: Therapy, path_text: str, value: Any, reason: str | None, actor: str) -> Correction:
    """Correct one recorded value of ``therapy`` with a reason, in one audited transaction."""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("A correction needs a reason.", code="reason_required", details={"field": "reason"})
    path = parse_path(path_text)
    old = value_at(therapy.data or {}, path)
    if old is _MISSING:
        raise Invalid(
            f"The therapy has no recorded value at '{path_text}'.", code="unknown_path", details={"field": "path"}
        )
    if json.dumps(old, sort_keys=True) == json.dumps(value, sort_keys=True):
        raise Invalid(
            "The new value is the recorded value; there is nothing to correct.",
            code="no_change",
            details={"field": "value"},
        )
    task = _recording_task(therapy, path)
    task_data = _with_value(task.data or {}, path, value) if task is not None else None
    if task is not None and task_data is not None:
        therapies.validate_form_data(therapy, task.form, task_data)
    with unit_of_work():
        therapies.correct_process_value(therapy, path, value, actor)
        signatures = []
        if task is not None:
            task.data = task_data
            signatures = list(db.session.execute(select(Signature.id).where(Signature.task_id == task.id)).scalars())
        correction = Correction(
            therapy_id=therapy.id,
            path=path_text,
            old_value=old,
            new_value=value,
            reason=reason,
            corrected_by=actor,
            corrected_at=clock()(),
        )
        db.session.add(correction)
        db.session.flush()
        audit.append(
            actor,
            "data.corrected",
            "therapy",
            therapy.id,
            therapy_id=therapy.id,
            site_id=therapy.site_id,
            reason=reason,
            data={
                "correction_id": correction.id,
                "path": path_text,
                "old_value": old,
                "new_value": value,
                "task_id": task.id if task else None,
                "activity_id": task.activity_id if task else None,
                "signatures_invalidated": signatures,
            },
        )
    return correction
