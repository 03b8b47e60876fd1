"""Designer pages: definitions and their versions, upload of a diagram with its forms and decisions, a version's
diagram and decision tables."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from server import usecases
from server.errors import ApiError
from server.store.extensions import db
from server.store.models import ProcessDefinition, Therapy
from server.workflow.definitions import version_calls, version_decisions

from . import bp
from .session import DESIGNERS, has_role, login_required, session_user


def _therapy_counts(key: str | None = None) -> dict[tuple[str, int], dict[str, int]]:
    """Therapies per (key, version), split by status."""
    query = select(Therapy.process_key, Therapy.process_version, Therapy.status, func.count()).group_by(
        Therapy.process_key, Therapy.process_version, Therapy.status
    )
    if key:
        query = query.where(Therapy.process_key == key)
    counts: dict[tuple[str, int], dict[str, int]] = {}
    for process_key, version, status, count in db.session.execute(query).all():
        counts.setdefault((process_key, version), {})[status] = count
    return counts


@bp.get("/definitions")
@login_required()
def definitions():
    """Every process with its versions, and the upload form for designers."""
    rows = (
        db.session.execute(select(ProcessDefinition).order_by(ProcessDefinition.key, ProcessDefinition.version))
        .scalars()
        .all()
    )
    by_key: dict[str, list[ProcessDefinition]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    return render_template(
        "web/definitions.html",
        by_key=by_key,
        counts=_therapy_counts(),
        can_upload=has_role(session_user(), *DESIGNERS),
        upload=None,
    )


@bp.post("/definitions")
@login_required(*DESIGNERS)
def upload_definition():
    """Deploy an uploaded diagram with its forms (the ``DeployDefinition`` command); errors name element and line."""
    diagram = request.files.get("bpmn")
    if diagram is None or not diagram.filename:
        flash("Choose a BPMN file to upload.", "error")
        return redirect(url_for("web.definitions"))
    forms = {f.filename.rsplit("/", 1)[-1]: f.read() for f in request.files.getlist("forms") if f.filename}
    decisions = {f.filename.rsplit("/", 1)[-1]: f.read() for f in request.files.getlist("decisions") if f.filename}
    try:
        row, created = usecases.deploy_definition(
            usecases.DeployDefinition(bpmn=diagram.read(), forms=forms, decisions=decisions, by=session_user())
        )
    except ApiError as exc:
        db.session.rollback()
        return _refused_upload(diagram.filename, exc)
    flash(
        f"{'Deployed' if created else 'Already deployed (identical content)'}: {row.name} version {row.version}.",
        "success",
    )
    return redirect(url_for("web.definition_version", key=row.key, version=row.version))


def _refused_upload(filename: str, refusal: ApiError):
    """The definitions page again, with what is wrong with the upload (element and line when known)."""
    rows = (
        db.session.execute(select(ProcessDefinition).order_by(ProcessDefinition.key, ProcessDefinition.version))
        .scalars()
        .all()
    )
    by_key: dict[str, list[ProcessDefinition]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    details = refusal.details
    upload = {
        "filename": filename,
        "message": refusal.message,
        "code": refusal.code,
        "element": details.get("element_id") or details.get("element"),
        "line": details.get("line"),
        "details": {k: v for k, v in details.items() if k not in ("element_id", "element", "line")},
    }
    return render_template(
        "web/definitions.html", by_key=by_key, counts=_therapy_counts(), can_upload=True, upload=upload
    ), refusal.status


@bp.get("/definitions/<key>")
@login_required()
def definition(key: str):
    """One process: its versions with how many therapies run (or wait on hold) on each, and for designers the
    link to compare each version with the one before and migrate therapies between them."""
    rows = (
        db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == key).order_by(ProcessDefinition.version.desc())
        )
        .scalars()
        .all()
    )
    if not rows:
        abort(404)
    return render_template(
        "web/definition.html",
        key=key,
        rows=rows,
        counts=_therapy_counts(key),
        can_migrate=has_role(session_user(), *usecases.MigrateTherapies.ROLES),
    )


@bp.get("/definitions/<key>/versions/<int:version>")
@login_required()
def definition_version(key: str, version: int):
    """One version: its diagram, its user tasks (role, form, signature), its decision tables (each rule a row) and
    its therapies."""
    row = db.session.execute(
        select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == version)
    ).scalar_one_or_none()
    if row is None:
        abort(404)
    counts = _therapy_counts(key).get((key, version), {})
    user_tasks = list(((row.info or {}).get("user_tasks") or {}).values())
    return render_template(
        "web/definition_version.html",
        row=row,
        counts=counts,
        user_tasks=user_tasks,
        decisions=version_decisions(row),
        calls=version_calls(row),
        can_draft=has_role(session_user(), *usecases.CreateDraft.ROLES),
    )
