"""The studio: designers draw a process in the browser (bpmn-js with Tether's properties panel), save it as a
draft, see each problem pinned on its element as they go, and deploy it when it passes every check. Drafts are
for designers and administrators only; site staff never see them."""

from __future__ import annotations

import json

from flask import Response, abort, flash, jsonify, redirect, render_template, request, url_for

from engine.definition import PARTIES, SIGNATURE_MEANINGS, TASK_ROLES
from engine.simulation import example_of
from server import usecases
from server.errors import ApiError, error_body
from server.store.extensions import db
from server.usecases.draft_commands import DraftFileKind
from server.workflow import drafts, simulation
from server.workflow.definitions import bundled_forms, latest_version
from server.workflow.operators import OPERATORS, parameters, required_parameters

from . import bp
from .form_fields import build_fields
from .session import login_required, page_user
from .vendor import AUTO_LAYOUT_MODULES, auto_layout_installed, dmn_editor_installed, vendor_dir

DRAFTERS = usecases.CreateDraft.ROLES
# The lane names the engine reads as roles, as a designer writes them.
LANE_ROLES = ("Coordinator", "Planner", "Manufacturing", "Logistics", "QA", "Integrator", "Admin")


def _refused(exc: ApiError):
    db.session.rollback()
    return jsonify(error_body(exc.code, exc.message, exc.details)), exc.status


def _draft_or_404(draft_id: str):
    try:
        return drafts.find(draft_id)
    except ApiError:
        abort(404)


def _bpmn() -> str | None:
    """The diagram as drawn, sent by the studio page as JSON ``{"bpmn": ...}`` (None when not sent)."""
    return _text("bpmn")


def _text(field: str) -> str | None:
    """A text field of the page's JSON body (None when not sent or blank)."""
    body = request.get_json(silent=True) or {}
    text = body.get(field) if isinstance(body, dict) else None
    return text if isinstance(text, str) and text.strip() else None


def _etag() -> str | None:
    """The draft's version the page opened (or last saved), sent as ``{"etag": ...}``: a save made to an older
    one is refused (409 draft_changed) instead of overwriting someone else's work."""
    return _text("etag")


def _files(draft) -> dict:
    """What the page keeps up to date after a change: the draft's version, decision tables and own forms."""
    return {"etag": drafts.etag(draft), "decisions": drafts.decision_files(draft), "forms": sorted(draft.forms or {})}


@bp.get("/studio")
@login_required(*DRAFTERS)
def studio():
    """The drafts, and a new one from an empty canvas or a deployed process."""
    from sqlalchemy import select

    from server.store.models import ProcessDefinition

    keys = db.session.execute(select(ProcessDefinition.key).distinct().order_by(ProcessDefinition.key)).scalars()
    return render_template("web/studio_list.html", drafts=drafts.listing(), keys=list(keys))


@bp.post("/studio")
@login_required(*DRAFTERS)
def create_draft():
    """A new draft (``CreateDraft``), then its page."""
    key = (request.form.get("key") or "").strip() or None
    version = request.form.get("version", type=int)
    name = (request.form.get("name") or "").strip()[:200] or ("" if key else "New process")
    try:
        draft = usecases.create_draft(usecases.CreateDraft(name=name, key=key, version=version, by=page_user()))
    except ApiError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("web.studio"))
    return redirect(url_for("web.studio_draft", draft_id=draft.id))


@bp.get("/studio/<draft_id>")
@login_required(*DRAFTERS)
def studio_draft(draft_id: str):
    """The modeler on one draft, with the forms, operators, roles, parties and meanings its panel offers."""
    draft = _draft_or_404(draft_id)
    names = sorted(set(bundled_forms()) | set(draft.forms or {}))
    current = latest_version(draft.based_on_key) if draft.based_on_key else None
    return render_template(
        "web/studio.html",
        draft=draft,
        current=current,
        etag=drafts.etag(draft),
        dmn_editor=dmn_editor_installed(),
        auto_layout=auto_layout_installed(),
        import_map={
            "imports": {
                name: url_for("web.vendor_file", package=name, filename="index.js") for name in AUTO_LAYOUT_MODULES
            }
        },
        charts=vendor_dir("chart.js") is not None,
        options={
            "decisions": drafts.decision_files(draft),
            "draft_forms": sorted(draft.forms or {}),
            "forms": [n for n in names if not n.endswith((".uischema.json", ".message.json"))],
            "ui_schemas": [n for n in names if n.endswith(".uischema.json")],
            "payload_schemas": [n for n in names if n.endswith(".message.json")],
            "operators": {name: (doc.strip().splitlines() or [""])[0] for name, (_run, doc) in OPERATORS.items()},
            "operator_parameters": {
                name: [
                    {"name": parameter, "hint": hint, "required": parameter in required_parameters(name)}
                    for parameter, hint in parameters(name).items()
                ]
                for name in OPERATORS
            },
            "roles": list(LANE_ROLES),
            "parties": list(PARTIES),
            "meanings": list(SIGNATURE_MEANINGS),
            "task_roles": list(TASK_ROLES),
        },
    )


def _form(draft, name: str) -> dict:
    """A form the draft may name: its own (kept from the version it started from), else a shipped one; {} if none."""
    if name in (draft.forms or {}):
        return draft.forms[name]
    shipped = bundled_forms().get(name)
    if shipped is None:
        return {}
    try:
        loaded = json.loads(shipped)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


@bp.get("/studio/<draft_id>/form-preview")
@login_required(*DRAFTERS)
def studio_form_preview(draft_id: str):
    """A user task's form as site staff will see it on the task page, filled with the schema's first example."""
    draft = _draft_or_404(draft_id)
    name, ui_name = request.args.get("form", ""), request.args.get("ui", "")
    schema = _form(draft, name)
    if not schema:
        abort(404)
    ui_schema = _form(draft, ui_name) if ui_name else {}
    example = example_of(schema)
    values = {f"data.{key}": value for key, value in example.items()}
    return render_template(
        "web/studio_form_preview.html",
        draft=draft,
        name=name,
        ui_name=ui_name,
        schema=schema,
        fields=build_fields(schema, ui_schema, values, {}),
        has_example=bool(example),
    )


@bp.post("/studio/<draft_id>/save")
@login_required(*DRAFTERS)
def studio_save(draft_id: str):
    """Store the diagram as drawn (``SaveDraft``)."""
    bpmn = _bpmn()
    if bpmn is None:
        return jsonify(error_body("invalid", "Nothing to save: the page sent no diagram.")), 422
    try:
        draft = usecases.save_draft(usecases.SaveDraft(draft_id=draft_id, bpmn=bpmn, by=page_user(), if_match=_etag()))
    except ApiError as exc:
        return _refused(exc)
    return {"saved": True, "updated_at": draft.updated_at.isoformat(), "etag": drafts.etag(draft)}


@bp.post("/studio/<draft_id>/check")
@login_required(*DRAFTERS)
def studio_check(draft_id: str):
    """The checks of a deployment on the diagram as drawn (``CheckDraft``): problems on their elements, and the
    diff against the current version when there are none."""
    try:
        result = usecases.check_draft(usecases.CheckDraft(draft_id=draft_id, bpmn=_bpmn(), by=page_user()))
    except ApiError as exc:
        return _refused(exc)
    return {"ok": not result["problems"], **result}


@bp.post("/studio/<draft_id>/simulate")
@login_required(*DRAFTERS)
def studio_simulate(draft_id: str):
    """Try the diagram as drawn on a simulated clock (``SimulateDraft``): one run, or a batch with ``runs``."""
    try:
        options = simulation.read_options(request.get_json(silent=True))
        result = usecases.simulate_draft(usecases.SimulateDraft(draft_id=draft_id, by=page_user(), options=options))
    except ApiError as exc:
        return _refused(exc)
    return result


@bp.post("/studio/<draft_id>/deploy")
@login_required(*DRAFTERS)
def studio_deploy(draft_id: str):
    """Save the diagram as drawn and deploy it (``DeployDraft``); 422 with the problems when it fails a check."""
    user = page_user()
    bpmn = _bpmn()
    try:
        if bpmn is not None:
            usecases.save_draft(usecases.SaveDraft(draft_id=draft_id, bpmn=bpmn, by=user, if_match=_etag()))
        row, created, before = usecases.deploy_draft(usecases.DeployDraft(draft_id=draft_id, by=user))
    except ApiError as exc:
        return _refused(exc)
    migrate_url = None
    if created and before and before["active_therapies"]:
        # Therapies run on the version this one replaces: the migration page starts with a dry run.
        migrate_url = url_for("web.compare_versions", key=row.key, **{"from": before["version"], "to": row.version})
    return {
        "key": row.key,
        "version": row.version,
        "created": created,
        "url": url_for("web.definition_version", key=row.key, version=row.version),
        "migrate_url": migrate_url,
        "active_therapies": before["active_therapies"] if before else 0,
        "etag": drafts.etag(drafts.find(draft_id)),
    }, (201 if created else 200)


@bp.get("/studio/<draft_id>/decisions/<name>")
@login_required(*DRAFTERS)
def studio_decision(draft_id: str, name: str):
    """One of the draft's decision tables, as DMN XML (for the decision table editor)."""
    draft = _draft_or_404(draft_id)
    try:
        return Response(drafts.decision_xml(draft, name), mimetype="application/xml")
    except ApiError:
        abort(404)


@bp.post("/studio/<draft_id>/decisions/<name>")
@login_required(*DRAFTERS)
def studio_put_decision(draft_id: str, name: str):
    """Keep a decision table with the draft (``PutDraftFile``), sent as ``{"xml", "etag"}`` by the editor."""
    return _keep_file(draft_id, "decision", name, "xml", "decision table")


@bp.post("/studio/<draft_id>/forms/<name>")
@login_required(*DRAFTERS)
def studio_put_form(draft_id: str, name: str):
    """Keep a form (JSON Schema) with the draft (``PutDraftFile``), sent as ``{"schema": text, "etag"}``."""
    return _keep_file(draft_id, "form", name, "schema", "form")


def _keep_file(draft_id: str, kind: DraftFileKind, name: str, field: str, what: str):
    """Keep the file the page sent as ``field`` with the draft; the draft's files, or the refusal as JSON."""
    text = _text(field)
    if text is None:
        return jsonify(error_body("invalid", f"Nothing to save: the page sent no {what}.")), 422
    command = usecases.PutDraftFile(
        draft_id=draft_id, kind=kind, name=name, content=text.encode("utf-8"), by=page_user(), if_match=_etag()
    )
    try:
        draft = usecases.put_draft_file(command)
    except ApiError as exc:
        return _refused(exc)
    return _files(draft)


@bp.post("/studio/<draft_id>/delete")
@login_required(*DRAFTERS)
def studio_delete(draft_id: str):
    """Remove the draft (``DeleteDraft``), then the list."""
    try:
        usecases.delete_draft(usecases.DeleteDraft(draft_id=draft_id, by=page_user()))
    except ApiError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        flash("Draft deleted.", "success")
    return redirect(url_for("web.studio"))
