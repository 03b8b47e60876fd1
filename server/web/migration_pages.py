"""Compare two versions of a process and move its running therapies from one to the other: the version diff
(``server.workflow.migrations.spec_diff``), an activity map for what was removed, a dry run and the migration
(the ``MigrateTherapies`` command). For designers and administrators."""

from __future__ import annotations

from flask import abort, render_template, request
from sqlalchemy import select

from server import usecases
from server.errors import ApiError
from server.store.extensions import db
from server.store.models import ProcessDefinition, Therapy
from server.workflow import migrations

from . import bp
from .session import login_required, page_user
from .therapy_pages import refusal

MIGRATORS = usecases.MigrateTherapies.ROLES
MAP_PREFIX = "map."  # the activity map's inputs: ``map.<removed activity id>`` = the added id it became, or ""


def _versions(key: str) -> list[ProcessDefinition]:
    rows = list(
        db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == key).order_by(ProcessDefinition.version)
        ).scalars()
    )
    if not rows:
        abort(404)
    return rows


def _chosen(rows: list[ProcessDefinition], values) -> tuple[int, int]:
    """The versions to compare: those asked for, else the one before the latest and the latest."""
    latest = rows[-1].version
    to_version = values.get("to", type=int) or latest
    from_version = values.get("from", type=int) or (rows[-2].version if len(rows) > 1 else latest)
    return from_version, to_version


def _label(row: ProcessDefinition, element_id: str) -> str:
    """An element id with its name in ``row`` ('Task_Enrol · Enrol the patient')."""
    name = ((row.info or {}).get("activities") or {}).get(element_id, {}).get("name")
    return f"{element_id} · {name}" if name else element_id


def _running(row: ProcessDefinition) -> list[Therapy]:
    """The therapies that could move off ``row``: running or held on it, oldest first."""
    query = select(Therapy).where(Therapy.definition_id == row.id, Therapy.status.in_(migrations.MOVABLE))
    return list(db.session.execute(query.order_by(Therapy.created_at, Therapy.id)).scalars())


def _page(
    key: str,
    from_version: int,
    to_version: int,
    activity_map: dict[str, str],
    results: dict | None = None,
    error: str | None = None,
) -> tuple[str, int]:
    """The compare-and-migrate page with ``error`` (a refusal) shown; 422 when the versions cannot be compared."""
    rows = _versions(key)
    by_version = {r.version: r for r in rows}
    old, new = by_version.get(from_version), by_version.get(to_version)
    diff, problem = None, None
    if old is None or new is None:
        problem = f"Process '{key}' has no version {from_version if old is None else to_version}."
    elif old.id == new.id:
        problem = "Choose two different versions to compare."
    else:
        diff = migrations.spec_diff(old, new)
    page = render_template(
        "web/migrate.html",
        key=key,
        rows=rows,
        from_version=from_version,
        to_version=to_version,
        diff=diff,
        old=old,
        new=new,
        label=_label,
        running=_running(old) if old is not None else [],
        activity_map=activity_map,
        results=results,
        error=error or problem,
    )
    return page, 422 if problem else 200


@bp.get("/definitions/<key>/migrate")
@login_required(*MIGRATORS)
def compare_versions(key: str):
    """The diff of two versions, the activity map form and the therapies that run on the older one."""
    from_version, to_version = _chosen(_versions(key), request.args)
    return _page(key, from_version, to_version, {})


@bp.post("/definitions/<key>/migrate")
@login_required(*MIGRATORS)
def migrate_versions(key: str):
    """A dry run (``action=dry_run``) or the migration of every therapy running on the older version, each
    therapy's result shown with its COI and stage."""
    from_version, to_version = _chosen(_versions(key), request.form)
    activity_map = {
        name.removeprefix(MAP_PREFIX): value
        for name, value in request.form.items()
        if name.startswith(MAP_PREFIX) and value
    }
    dry_run = request.form.get("action") != "migrate"
    command = usecases.MigrateTherapies(
        key=key,
        from_version=from_version,
        to_version=to_version,
        by=page_user(),
        activity_map=activity_map,
        dry_run=dry_run,
    )
    try:
        answers = usecases.migrate_therapies(command)
    except ApiError as exc:
        db.session.rollback()
        page, _ = _page(key, from_version, to_version, activity_map, error=refusal(exc))
        return page, exc.status
    db.session.expire_all()  # a dry run rolled back, a migration committed: read the therapies as they are now
    results = [{**answer, "therapy": db.session.get(Therapy, answer["therapy_id"])} for answer in answers]
    return _page(key, from_version, to_version, activity_map, {"dry_run": dry_run, "rows": results})
