"""The complete record of one therapy (21 CFR 11.10(b)): what an inspector reads, as JSON and as PDF.

It gathers the therapy's identity, its vein-to-vein times, every step with who and when, every electronic
signature with printed name, time and meaning, the chain of custody, the condition readings (summary and
excursions), the alerts and the therapy's audit entries with their hashes. ``record_pdf`` renders it. The
patient reference is need-to-know: withheld from a reader who may not know it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from engine.coi import parse_coi
from server.access.auth import sees_patient, withhold_patient
from server.compliance.signatures import signatures_for
from server.custody import conditions
from server.custody.transfers import breaks, chain, transfer_item
from server.oversight.alerts import alert_item
from server.store import audit
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, Signature, TaskRecord, Therapy, User

RECORD_FORMAT = "tether.therapy-record"
RECORD_VERSION = 1
WITHHELD_FIELD = "patient_reference"  # what a record names as withheld from a reader who may not know the patient
# Audit actions that are steps of the therapy's story (the full trail follows in "audit").
STEP_ACTIONS = (
    "therapy.started",
    "task.completed",
    "task.cancelled",
    "message.received",
    "timer.fired",
    "task.escalated",
    "notification.sent",
    "custody.transferred",
    "coi.mismatch",
    "condition.excursion",
    "signature.applied",
    "therapy.completed",
    "therapy.cancelled",
    "alert.acknowledged",
    "therapy.parties_changed",
    "therapy.held",
    "therapy.resumed",
    "therapy.migrated",
    "therapy.rescheduled",
    "message.held",
    "booking.created",
    "booking.moved",
    "booking.cancelled",
)


def _why(code: Any, reason: str | None) -> str:
    return f" ({code}{': ' + reason if reason and reason != code else ''})" if code else ""


def _slot(data: dict) -> str:
    return f"{data.get('kind')} at {data.get('site')}, {data.get('start')}"


# How the record says the lifecycle's steps, from each entry's data and reason.
PLAIN_WORDS: dict[str, Any] = {
    "therapy.parties_changed": lambda d, r: (
        "Handed on: "
        + ", ".join(f"{p} {c.get('from')} -> {c.get('to')}" for p, c in (d.get("changes") or {}).items())
        + _why(d.get("reason_code"), r)
    ),
    "therapy.held": lambda d, r: "Held" + _why(d.get("reason_code"), r),
    "therapy.resumed": lambda d, r: (
        f"Resumed after {round((d.get('held_seconds') or 0) / 3600, 1)} h on hold"
        + (f"; {d.get('messages_kept')} message(s) kept meanwhile" if d.get("messages_kept") else "")
    ),
    "therapy.migrated": lambda d, r: f"Moved from version {d.get('from_version')} to {d.get('to_version')}",
    "therapy.rescheduled": lambda d, r: "Sent back to scheduling" + _why(d.get("reason_code"), r),
    "message.held": lambda d, r: f"Message {d.get('name')} kept while on hold",
    "booking.created": lambda d, r: f"Booked {_slot(d)}",
    "booking.moved": lambda d, r: f"Rebooked {_slot(d)}" + _why(d.get("reason_code"), r),
    "booking.cancelled": lambda d, r: f"Booking cancelled: {_slot(d)}" + _why(d.get("reason_code"), r),
}


def _iso(moment: datetime | None) -> str | None:
    from server.clock import iso

    return iso(moment)


def _parse_time(value: Any) -> datetime | None:
    """A timestamp a form recorded, or None when absent or not ISO 8601."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _completed_tasks(therapy_id: str) -> list[TaskRecord]:
    return list(
        db.session.execute(
            select(TaskRecord)
            .where(TaskRecord.therapy_id == therapy_id, TaskRecord.status == "completed")
            .order_by(TaskRecord.completed_at, TaskRecord.created_at)
        ).scalars()
    )


# Messages that say the collected material was lost on its way (the bundled autologous diagram's shipment.lost).
LOSS_MESSAGES = ("shipment.lost",)


def _is_collection(task: TaskRecord) -> bool:
    """A completed collection: its form recorded the collection (a DIN or its end time), or failing that its
    activity or form is named for apheresis or collection (not the decision on a new collection)."""
    data = task.data or {}
    if "din" in data or "collection_completed_at" in data:
        return True
    names = f"{task.activity_id} {task.form or ''}".lower()
    return ("apheresis" in names or "collect" in names) and "recollect" not in names


def collections(tasks: list[TaskRecord], entries: list[AuditEntry]) -> list[dict[str, Any]]:
    """Every collection of the patient's cells, in the order of the audit trail, under the one COI: the material
    id (the DIN), when it was collected and recorded by whom, and what became of it (accepted or rejected at the
    manufacturing receipt, lost in transit, or null while on its way)."""
    by_id = {t.id: t for t in tasks}
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for entry in sorted(entries, key=lambda e: e.seq):
        data = entry.data or {}
        if entry.action == "task.completed":
            task = by_id.get(data.get("task_id") or entry.subject_id)
            if task is None:
                continue
            recorded = task.data or {}
            if _is_collection(task):
                current = {
                    "number": len(out) + 1,
                    "material_id": recorded.get("din"),
                    "collected_at": _iso(_parse_time(recorded.get("collection_completed_at")) or task.completed_at),
                    "task_id": task.id,
                    "recorded_by": task.completed_by,
                    "outcome": None,
                    "outcome_at": None,
                    "outcome_reason": None,
                }
                out.append(current)
            elif current is not None and current["outcome"] is None and recorded.get("receipt_decision"):
                current.update(
                    outcome=recorded["receipt_decision"],
                    outcome_at=_iso(task.completed_at),
                    outcome_reason=recorded.get("rejection_reason"),
                )
        elif entry.action == "message.received" and data.get("name") in LOSS_MESSAGES:
            if current is not None and current["outcome"] is None:
                current.update(outcome="lost", outcome_at=_iso(entry.at))
    return out


def collections_of(therapy: Therapy) -> list[dict[str, Any]]:
    """``collections`` of one therapy, read from its task rows and audit trail."""
    tasks = list(db.session.execute(select(TaskRecord).where(TaskRecord.therapy_id == therapy.id)).scalars())
    entries = list(
        db.session.execute(
            select(AuditEntry).where(
                AuditEntry.therapy_id == therapy.id, AuditEntry.action.in_(("task.completed", "message.received"))
            )
        ).scalars()
    )
    return collections(tasks, entries)


def vein_to_vein(therapy: Therapy, now: datetime | None = None) -> dict[str, Any]:
    """Collection time, infusion time when known, the elapsed vein-to-vein time and the current stage.

    Collection is the ``collection_completed_at`` a form recorded, else the completion of the collection
    (apheresis) task; where the patient was collected again, the last collection (the one the product is made
    from). Infusion is the ``infusion_started_at`` a form recorded. Until the infusion the elapsed time runs to
    ``now``.
    """
    collection_at, source, infusion_at = collection_and_infusion(_completed_tasks(therapy.id))
    elapsed = None
    if collection_at is not None:
        if now is None:
            from server.clock import clock

            now = clock()()
        elapsed = ((infusion_at or now) - collection_at).total_seconds()
    return {
        "collection_at": _iso(collection_at),
        "collection_source": source,
        "infusion_at": _iso(infusion_at),
        "elapsed_seconds": round(elapsed) if elapsed is not None else None,
        "elapsed_days": round(elapsed / 86400, 2) if elapsed is not None else None,
        "infused": infusion_at is not None,
        "stage": therapy.stage,
        "status": therapy.status,
    }


def collection_and_infusion(tasks: list[TaskRecord]) -> tuple[datetime | None, str | None, datetime | None]:
    """From a therapy's completed tasks in completion order: when the cells were last collected (and where that
    came from: ``form:<activity>`` or ``task:<activity>``) and when the product was infused, each None when not
    yet known (the rules of ``vein_to_vein``)."""
    collection_at, source = None, None
    for task in reversed([t for t in tasks if _is_collection(t)]):
        collection_at = _parse_time((task.data or {}).get("collection_completed_at"))
        source = f"form:{task.activity_id}" if collection_at else f"task:{task.activity_id}"
        collection_at = collection_at or task.completed_at
        break
    infusion_at = next(
        (moment for moment in (_parse_time((t.data or {}).get("infusion_started_at")) for t in tasks) if moment), None
    )
    return collection_at, source, infusion_at


# Actors that are the system itself rather than a person.
SYSTEM_ACTORS = {"scheduler": "Timer scheduler"}


def _printed_names(usernames: set[str]) -> dict[str, str]:
    names = {actor: name for actor, name in SYSTEM_ACTORS.items() if actor in usernames}
    if usernames:
        rows = db.session.execute(select(User.username, User.display_name).where(User.username.in_(usernames)))
        names.update({username: name for username, name in rows.all()})
    return names


def _entry_item(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "reason": entry.reason,
        "data": entry.data or {},
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _signature_item(source: Any, steps: dict[str, TaskRecord]) -> dict[str, Any]:
    """One signature from a Signature row, a dict, or a ``signature.applied`` audit entry."""
    fields: dict[str, Any]
    if isinstance(source, AuditEntry):
        data = dict(source.data or {})
        fields = {
            "task_id": source.subject_id,
            "signer": data.get("signer") or source.actor,
            "printed_name": data.get("printed_name"),
            "meaning": data.get("meaning"),
            "signed_at": data.get("signed_at") or _iso(source.at),
            "content_hash": data.get("signed_hash") or data.get("content_hash"),
            "audit_seq": source.seq,
        }
    elif isinstance(source, Signature):
        fields = {
            "id": source.id,
            "task_id": source.task_id,
            "signer": source.signer_username,
            "printed_name": source.printed_name,
            "meaning": source.meaning,
            "signed_at": _iso(source.signed_at),
            "content_hash": source.content_hash,
        }
    else:
        data = dict(source)
        signed_at = data.get("signed_at")
        fields = {
            "id": data.get("id"),
            "task_id": data.get("task_id"),
            "signer": data.get("signer") or data.get("signer_username") or data.get("username"),
            "printed_name": data.get("printed_name"),
            "meaning": data.get("meaning"),
            "signed_at": _iso(signed_at) if isinstance(signed_at, datetime) else signed_at,
            "content_hash": data.get("content_hash") or data.get("signed_hash"),
            "valid": data.get("valid"),
        }
    task = steps.get(fields.get("task_id") or "")
    fields["activity_id"] = task.activity_id if task else None
    fields["step"] = task.name if task else None
    return fields


def signatures(therapy: Therapy, entries: list[AuditEntry], tasks: dict[str, TaskRecord]) -> list[dict]:
    """Every electronic signature of the therapy with printed name, time and meaning."""
    items = [_signature_item(s, tasks) for s in signatures_for(therapy)]
    # Signatures known only from the audit trail (recorded before signature rows existed) are listed too.
    seen = {(i["task_id"], i["meaning"], i["signer"]) for i in items}
    seen_ids = {i.get("id") for i in items if i.get("id")}
    for entry in entries:
        if entry.action == "signature.applied" and (entry.data or {}).get("signature_id") not in seen_ids:
            item = _signature_item(entry, tasks)
            if (item["task_id"], item["meaning"], item["signer"]) not in seen:
                items.append(item)
    return items


def _step_item(entry: AuditEntry, names: dict[str, str], tasks: dict[str, TaskRecord]) -> dict[str, Any]:
    data = entry.data or {}
    task = tasks.get(data.get("task_id") or entry.subject_id)
    name = data.get("name") or data.get("late_activity_name") or (task.name if task else None)
    if entry.action == "custody.transferred":
        name = f"{data.get('material_id')}: {data.get('from_party')} -> {data.get('to_party')}"
    elif entry.action == "notification.sent":
        name = f"{data.get('role')}: {data.get('message')}"
    elif entry.action == "condition.excursion":
        name = f"{data.get('temperature_c')} °C outside {data.get('range')}"
    elif entry.action in PLAIN_WORDS:
        name = PLAIN_WORDS[entry.action](data, entry.reason)
    step = {
        "seq": entry.seq,
        "at": _iso(entry.at),
        "action": entry.action,
        "activity_id": data.get("activity_id") or (task.activity_id if task else None),
        "name": name,
        "actor": entry.actor,
        "actor_name": names.get(entry.actor),
    }
    if entry.action == "task.completed" and task is not None:
        step.update(
            {
                "role": task.role,
                "ready_at": _iso(task.created_at),
                "completed_at": _iso(task.completed_at),
                "data": task.data,
            }
        )
    return step


def therapy_record(therapy: Therapy, reader: User) -> dict[str, Any]:
    """The whole record of ``therapy`` as one JSON-ready document, for ``reader``: one who may not know the
    patient (``access.auth.sees_patient``) gets it with the patient reference withheld wherever it appears
    (``"patient_reference": null``, and ``record.withheld`` names it), the hashes still those of the full entries."""
    coi = parse_coi(therapy.coi)
    entries = list(
        db.session.execute(
            select(AuditEntry).where(AuditEntry.therapy_id == therapy.id).order_by(AuditEntry.seq)
        ).scalars()
    )
    task_rows = list(
        db.session.execute(
            select(TaskRecord).where(TaskRecord.therapy_id == therapy.id).order_by(TaskRecord.created_at, TaskRecord.id)
        ).scalars()
    )
    tasks = {t.id: t for t in task_rows}
    names = _printed_names({e.actor for e in entries} | {t.completed_by for t in task_rows if t.completed_by})
    transfers = chain(therapy.id)
    alerts = list(
        db.session.execute(
            select(Alert).where(Alert.therapy_id == therapy.id).order_by(Alert.raised_at, Alert.id)
        ).scalars()
    )
    definition = therapy.definition
    intact = all(audit.entry_hash(audit.entry_dict(e)) == e.hash for e in entries)
    known = sees_patient(reader, therapy)
    document = {
        "record": {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "generated_at": _iso(datetime.now(UTC)),
            "generated_by": reader.username,
            "basis": "21 CFR 11.10(b); EU GMP Annex 11 §8",
            "withheld": [] if known else [WITHHELD_FIELD],
        },
        "therapy": {
            "id": therapy.id,
            "coi": coi.value,
            "coi_check": coi.check,
            "coi_eye_readable": coi.eye_readable,
            "coi_barcode": coi.barcode,
            "patient_reference": therapy.patient_reference,
            "status": therapy.status,
            "stage": therapy.stage,
            "process": {
                "key": therapy.process_key,
                "version": therapy.process_version,
                "name": definition.name,
                "definition_id": definition.id,
                "checksum": definition.checksum,
                # the deployed definitions its call activities ran, as bound when this version was deployed
                "calls": [
                    {"activity_id": activity_id, "key": binding["key"], "version": binding["version"]}
                    for activity_id, binding in sorted(((definition.info or {}).get("called") or {}).items())
                    if not binding.get("via")
                ],
            },
            "site": {"code": therapy.site.code, "name": therapy.site.name},
            "parties": therapy.parties,
            "created_at": _iso(therapy.created_at),
            "created_by": therapy.created_by,
            "ended_at": _iso(therapy.ended_at),
        },
        "vein_to_vein": vein_to_vein(therapy),
        "collections": collections(task_rows, entries),
        "steps": [_step_item(e, names, tasks) for e in entries if e.action in STEP_ACTIONS],
        "tasks": [
            {
                "id": t.id,
                "activity_id": t.activity_id,
                "name": t.name,
                "role": t.role,
                "site": t.site.code if t.site else None,
                "status": t.status,
                "ready_at": _iso(t.created_at),
                "due_at": _iso(t.due_at),
                "completed_at": _iso(t.completed_at),
                "completed_by": t.completed_by,
                "completed_by_name": names.get(t.completed_by or ""),
                "signature_meaning": t.signature,
                "data": t.data,
            }
            for t in task_rows
        ],
        "signatures": signatures(therapy, entries, tasks),
        "custody": {"transfers": [transfer_item(t) for t in transfers], "breaks": breaks(transfers)},
        "conditions": {
            "range_now": conditions.allowed_range(therapy)[0],
            "summary": conditions.summary(therapy.id),
            "excursions": conditions.excursion_readings(therapy.id),
        },
        "alerts": [alert_item(a) for a in alerts],
        "audit": {
            "count": len(entries),
            "entries_intact": intact,
            "first_seq": entries[0].seq if entries else None,
            "last_seq": entries[-1].seq if entries else None,
            "entries": [_entry_item(e) for e in entries],
        },
        "people": [{"username": username, "printed_name": name} for username, name in sorted(names.items())],
    }
    return document if known else withhold_patient(document, therapy.patient_reference)
