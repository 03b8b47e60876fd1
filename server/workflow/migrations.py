"""Moving running therapies to another version of their process.

A designer chooses the therapies of one version (all, or some), the version to move to, and how renamed
activities map (old id to new id). A dry run says of each therapy whether it can move, and why not; the
migration then moves each in its own transaction: the engine state goes onto the new version from where the
therapy stands (tasks keep their ids; open ones are taken up on the new version), the task rows follow, and
an audit entry and a ``therapy.migrated`` event record it. A therapy that cannot move is left untouched.
Uses SpiffWorkflow's spec diff and migration through ``engine.runtime.Runtime.migrate_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from engine.errors import NotMigratable
from engine.outcome import Outcome
from server.clock import clock
from server.errors import Invalid, NotFound
from server.integration import outbox
from server.store.extensions import db
from server.store.models import ProcessDefinition, TaskRecord, Therapy
from server.store.uow import unit_of_work
from server.workflow import parties, therapies
from server.workflow.definitions import engine_definition_by_id, version_calls

MOVABLE = ("active", "on_hold")


def version(key: str, number: Any, field: str) -> ProcessDefinition:
    """Version ``number`` of process ``key``; 422 naming ``field`` when there is none."""
    row = (
        db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == number)
        ).scalar_one_or_none()
        if type(number) is int
        else None
    )
    if row is None:
        raise Invalid(f"Process '{key}' has no version {number}.", code="unknown_version", details={"field": field})
    return row


def check_map(old: ProcessDefinition, new: ProcessDefinition, activity_map: Mapping[str, Any]) -> dict[str, str]:
    """The activity map when every key is an activity of ``old`` and every value one of ``new``; 422 otherwise."""
    old_ids = set(engine_definition_by_id(old.id).spec.task_specs)
    new_ids = set(engine_definition_by_id(new.id).spec.task_specs)
    for before, after in activity_map.items():
        if before not in old_ids:
            raise Invalid(
                f"Version {old.version} has no activity '{before}'.",
                code="unknown_activity",
                details={"field": "activity_map", "activity": before},
            )
        if not isinstance(after, str) or after not in new_ids:
            raise Invalid(
                f"Version {new.version} has no activity '{after}'.",
                code="unknown_activity",
                details={"field": "activity_map", "activity": after},
            )
    return dict(activity_map)


def migrate(
    old: ProcessDefinition,
    new: ProcessDefinition,
    therapy_ids: list[str] | None,
    activity_map: dict[str, str],
    dry_run: bool,
    actor: str,
) -> list[dict]:
    """Move (or, in a dry run, try) each chosen therapy of ``old``; one result per therapy."""
    if new.id == old.id:
        raise Invalid("Choose another version to move to.", code="same_version", details={"field": "to_version"})
    query = select(Therapy.id).where(Therapy.definition_id == old.id, Therapy.status.in_(MOVABLE))
    if therapy_ids is not None:
        query = query.where(Therapy.id.in_(therapy_ids))
    chosen = list(db.session.execute(query.order_by(Therapy.created_at, Therapy.id)).scalars())
    if therapy_ids is not None:
        missing = sorted(set(therapy_ids) - set(chosen))
        if missing:
            raise NotFound(
                f"{len(missing)} of the therapies are not running on version {old.version}.",
                details={"therapy_ids": missing},
            )
    return [_one(therapy_id, old, new, activity_map, dry_run, actor) for therapy_id in chosen]


def _one(therapy_id: str, old, new, activity_map: dict[str, str], dry_run: bool, actor: str) -> dict:
    therapy = db.session.get_one(Therapy, therapy_id)
    runtime = therapies.runtime_for(therapy, actor, new.id)
    try:
        outcome = runtime.migrate_from(engine_definition_by_id(old.id), therapy.state, activity_map)
    except NotMigratable as exc:
        db.session.rollback()
        return {"therapy_id": therapy_id, "ok": False, "reason": exc.message}
    if dry_run:
        db.session.rollback()
        return {"therapy_id": therapy_id, "ok": True}
    with unit_of_work():
        therapy = db.session.get_one(Therapy, therapy_id)
        _move(therapy, new, outcome, actor)
        data = {"from_version": old.version, "to_version": new.version, "activity_map": activity_map}
        outbox.record_event("therapy.migrated", therapy, data, actor)
    return {"therapy_id": therapy_id, "ok": True}


def _move(therapy: Therapy, new: ProcessDefinition, outcome: Outcome, actor: str) -> None:
    """The therapy and its open task rows onto the new version (inside the caller's transaction)."""
    therapy.definition, therapy.definition_id, therapy.process_version = new, new.id, new.version
    ready = {t.task_id: t for t in outcome.ready_tasks}
    rows = db.session.execute(
        select(TaskRecord).where(TaskRecord.therapy_id == therapy.id, TaskRecord.status == "ready")
    ).scalars()
    for row in rows:
        task = ready.get(row.id)
        if task is None:  # not open on the new version
            row.status, row.completed_at = "cancelled", clock()()
            continue
        row.activity_id, row.name, row.role, row.party = task.activity_id, task.name, task.role, task.party
        row.form, row.ui_form, row.instructions, row.signature = (
            task.form,
            task.ui_form,
            task.instructions,
            task.signature,
        )
        row.site_id = parties.task_site(therapy, task.party)
    held, stage = therapy.status == "on_hold", therapy.stage
    therapies.apply_outcome(therapy, outcome, actor)
    if held:  # a held therapy stays held: its clocks do not run
        therapy.next_due_at, therapy.stage = None, stage


def spec_diff(old: ProcessDefinition, new: ProcessDefinition) -> dict[str, list]:
    """The BPMN elements ``new`` added, removed and changed against ``old`` (by element id), and the call activities
    that run another version of a called process (``calls``)."""
    from SpiffWorkflow.bpmn.util.diff import SpecDiff

    from engine.serialization import spec_registry

    before, after = engine_definition_by_id(old.id).spec, engine_definition_by_id(new.id).spec
    diff = SpecDiff(spec_registry(), before, after)

    def elements(specs) -> list[str]:
        return sorted({s.bpmn_id for s in specs if getattr(s, "bpmn_id", None)})

    return {
        "added": elements(diff.added),
        "removed": elements(diff.removed),
        "changed": elements(diff.changed),
        "calls": called_changes(old, new),
    }


def called_changes(old: ProcessDefinition, new: ProcessDefinition) -> list[dict]:
    """The call activities whose bound definition or version differs between ``old`` and ``new``: ``{"activity_id",
    "from": {"key", "version"} or None, "to": ...}`` (None where that version has no such call)."""
    before = {c["activity_id"]: c for c in version_calls(old)}
    after = {c["activity_id"]: c for c in version_calls(new)}

    def bound(call: dict | None) -> dict | None:
        return {"key": call["key"], "version": call["version"]} if call else None

    changes = []
    for activity_id in sorted(set(before) | set(after)):
        was, now = bound(before.get(activity_id)), bound(after.get(activity_id))
        if was != now:
            changes.append({"activity_id": activity_id, "from": was, "to": now})
    return changes
