"""The studio's drafts: diagrams saved, checked and deployed by designers; never run, never shown to site staff."""

from __future__ import annotations

import json

from flask import Response, g, request
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import require
from server.api.schemas import load_json
from server.clock import iso
from server.errors import Invalid
from server.inputs import ID_MAX
from server.store.models import ProcessDraft
from server.usecases.draft_commands import DraftFileKind
from server.workflow import drafts, simulation

from . import bp
from .views import definition_version

NAME = validate.Length(min=1, max=200)
# The diagram travels as text inside the JSON body; the JSON body limit (TETHER_MAX_JSON_BYTES) bounds it.
BPMN = validate.Length(min=1, max=1024 * 1024)


def draft_view(draft: ProcessDraft, *, with_xml: bool = True) -> dict:
    """One draft; its diagram's XML unless listing."""
    view = {
        "id": draft.id,
        "name": draft.name,
        "based_on": drafts.based_on(draft),
        "forms": sorted(draft.forms or {}),
        "decisions": sorted(draft.decisions or {}),
        "etag": drafts.etag(draft),
        "created_by": draft.created_by,
        "created_at": iso(draft.created_at),
        "updated_by": draft.updated_by,
        "updated_at": iso(draft.updated_at),
    }
    if with_xml:
        view["bpmn"] = draft.bpmn_xml
    return view


def answer(draft: ProcessDraft, status: int = 200):
    """The draft's view with its version as the ``ETag`` header (send it back as ``If-Match`` with a change)."""
    return draft_view(draft), status, {"ETag": f'"{drafts.etag(draft)}"'}


def if_match(body: dict | None = None) -> str | None:
    """The draft version a change was made to: the ``If-Match`` header, else the body's ``etag``."""
    header = request.headers.get("If-Match")
    if header:
        return header
    return (body or {}).get("etag")


class CreateDraftSchema(Schema):
    """POST /process-drafts."""

    class Meta:
        unknown = RAISE

    name = fields.String(load_default="", validate=validate.Length(max=200))
    key = fields.String(load_default=None, allow_none=True, validate=NAME)
    version = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(1, ID_MAX))


class SaveDraftSchema(Schema):
    """PUT /process-drafts/{id}."""

    class Meta:
        unknown = RAISE

    bpmn = fields.String(required=True, validate=BPMN)
    name = fields.String(load_default=None, allow_none=True, validate=NAME)
    etag = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))


class CheckDraftSchema(Schema):
    """POST /process-drafts/{id}/check."""

    class Meta:
        unknown = RAISE

    bpmn = fields.String(load_default=None, allow_none=True, validate=BPMN)


def simulation_options() -> simulation.Options:
    """The request's simulation options, read and checked (422 naming the field)."""
    return simulation.Options(**load_json(simulation.OptionsSchema()))


@bp.get("/process-drafts")
@require(*usecases.CreateDraft.ROLES)
def list_drafts():
    """Every draft, the most recently changed first (without their XML)."""
    return {"items": [draft_view(d, with_xml=False) for d in drafts.listing()]}


@bp.post("/process-drafts")
@require(*usecases.CreateDraft.ROLES)
def create_draft():
    """Start a draft: an empty canvas, or a copy of a deployed version (``key``, ``version`` default the latest)."""
    body = load_json(CreateDraftSchema())
    if body["version"] is not None and body["key"] is None:
        raise Invalid("A version needs the key of its process.", details={"fields": {"key": ["Missing with version."]}})
    if body["key"] is None and not body["name"]:
        body["name"] = "New process"
    draft = usecases.create_draft(usecases.CreateDraft(by=g.user, **body))
    return answer(draft, 201)


@bp.get("/process-drafts/<draft_id>")
@require(*usecases.CreateDraft.ROLES)
def get_draft(draft_id: str):
    """One draft with its diagram."""
    return answer(drafts.find(draft_id))


@bp.put("/process-drafts/<draft_id>")
@require(*usecases.SaveDraft.ROLES)
def save_draft(draft_id: str):
    """Store the diagram as drawn (unfinished is fine: nothing is checked until asked); with ``If-Match`` (or
    ``etag``), 409 ``draft_changed`` when someone changed the draft since."""
    body = load_json(SaveDraftSchema())
    match = if_match(body)
    body.pop("etag", None)
    draft = usecases.save_draft(usecases.SaveDraft(draft_id=draft_id, by=g.user, if_match=match, **body))
    return answer(draft)


@bp.delete("/process-drafts/<draft_id>")
@require(*usecases.DeleteDraft.ROLES)
def delete_draft(draft_id: str):
    """Remove the draft."""
    usecases.delete_draft(usecases.DeleteDraft(draft_id=draft_id, by=g.user))
    return "", 204


@bp.post("/process-drafts/<draft_id>/check")
@require(*usecases.CheckDraft.ROLES)
def check_draft(draft_id: str):
    """The checks of a deployment on the draft (or on ``bpmn``, the diagram as drawn): the problems, each with its
    element and line, and, when there are none, the diff against the latest deployed version."""
    body = load_json(CheckDraftSchema())
    result = usecases.check_draft(usecases.CheckDraft(draft_id=draft_id, by=g.user, **body))
    return {"ok": not result["problems"], **result}


@bp.post("/process-drafts/<draft_id>/deploy")
@require(*usecases.DeployDraft.ROLES)
def deploy_draft(draft_id: str):
    """Deploy the draft as the next version of its process; 422 with the problems when it fails a check."""
    row, created, _replaced = usecases.deploy_draft(usecases.DeployDraft(draft_id=draft_id, by=g.user))
    return definition_version(row), (201 if created else 200)


# -- the draft's decision tables (DMN) and forms (JSON Schema) ----------------------------------------------------

XML_TYPES = ("application/xml", "text/xml", "application/dmn+xml")


def _file_body(kind: str) -> bytes:
    """A decision table's XML (``application/xml`` or ``text/xml``) or a form's JSON (``application/json``), as
    sent; 415 for another media type, 422 when empty (the use case refuses one too large)."""
    from werkzeug.exceptions import UnsupportedMediaType

    media = (request.mimetype or "").lower()
    if kind == "decision" and media not in XML_TYPES:
        raise UnsupportedMediaType("Send the DMN file as XML with 'Content-Type: application/xml'.")
    if kind == "form" and media != "application/json":
        raise UnsupportedMediaType("Send the form as JSON with 'Content-Type: application/json'.")
    content = request.get_data(cache=False)
    if not content.strip():
        raise Invalid(f"The {kind} file is empty.", details={"fields": {"body": ["The file's content."]}})
    return content


def _files_view(draft: ProcessDraft, kind: str) -> dict:
    if kind == "decision":
        return {"items": drafts.decision_files(draft)}
    return {"items": [{"name": name} for name in sorted(draft.forms or {})]}


@bp.get("/process-drafts/<draft_id>/decisions")
@require(*usecases.PutDraftFile.ROLES)
def list_draft_decisions(draft_id: str):
    """The draft's decision tables: file name, decision id and name."""
    return _files_view(drafts.find(draft_id), "decision")


@bp.get("/process-drafts/<draft_id>/decisions/<name>")
@require(*usecases.PutDraftFile.ROLES)
def get_draft_decision(draft_id: str, name: str):
    """One decision table's DMN XML."""
    draft = drafts.find(draft_id)
    return Response(
        drafts.decision_xml(draft, name), mimetype="application/xml", headers={"ETag": f'"{drafts.etag(draft)}"'}
    )


@bp.put("/process-drafts/<draft_id>/decisions/<name>")
@require(*usecases.PutDraftFile.ROLES)
def put_draft_decision(draft_id: str, name: str):
    """Keep a DMN file with the draft (body: the XML), checked as an upload checks it; the draft's next check and
    deploy use it."""
    return _put_file(draft_id, "decision", name)


@bp.delete("/process-drafts/<draft_id>/decisions/<name>")
@require(*usecases.DeleteDraftFile.ROLES)
def delete_draft_decision(draft_id: str, name: str):
    """Remove a DMN file from the draft."""
    return _delete_file(draft_id, "decision", name)


@bp.get("/process-drafts/<draft_id>/forms")
@require(*usecases.PutDraftFile.ROLES)
def list_draft_forms(draft_id: str):
    """The draft's own form files (the shipped ones in forms/ are available too)."""
    return _files_view(drafts.find(draft_id), "form")


@bp.get("/process-drafts/<draft_id>/forms/<name>")
@require(*usecases.PutDraftFile.ROLES)
def get_draft_form(draft_id: str, name: str):
    """One form file's JSON Schema."""
    draft = drafts.find(draft_id)
    return Response(
        json.dumps(drafts.form_schema(draft, name)),
        mimetype="application/json",
        headers={"ETag": f'"{drafts.etag(draft)}"'},
    )


@bp.put("/process-drafts/<draft_id>/forms/<name>")
@require(*usecases.PutDraftFile.ROLES)
def put_draft_form(draft_id: str, name: str):
    """Keep a JSON Schema form with the draft (body: the schema), checked as an upload checks it."""
    return _put_file(draft_id, "form", name)


@bp.delete("/process-drafts/<draft_id>/forms/<name>")
@require(*usecases.DeleteDraftFile.ROLES)
def delete_draft_form(draft_id: str, name: str):
    """Remove a form file from the draft."""
    return _delete_file(draft_id, "form", name)


def _put_file(draft_id: str, kind: DraftFileKind, name: str):
    """Keep the request's body as the draft's ``kind`` file ``name``; the draft."""
    content = _file_body(kind)
    command = usecases.PutDraftFile(
        draft_id=draft_id, kind=kind, name=name, content=content, by=g.user, if_match=if_match()
    )
    return answer(usecases.put_draft_file(command))


def _delete_file(draft_id: str, kind: DraftFileKind, name: str):
    """Remove the draft's ``kind`` file ``name``; the draft."""
    command = usecases.DeleteDraftFile(draft_id=draft_id, kind=kind, name=name, by=g.user, if_match=if_match())
    return answer(usecases.delete_draft_file(command))


@bp.post("/process-drafts/<draft_id>/simulate")
@require(*usecases.SimulateDraft.ROLES)
def simulate_draft(draft_id: str):
    """Try the draft on a simulated clock: one run (its path, events, alerts, end and vein-to-vein time), or with
    ``runs`` a batch (the spread of vein-to-vein times, the ends and how often each escalation fired). Nothing is
    stored."""
    options = simulation_options()
    return usecases.simulate_draft(usecases.SimulateDraft(draft_id=draft_id, by=g.user, options=options))


@bp.post("/process-definitions/<key>/versions/<int:version>/simulate")
@require(*usecases.SimulateVersion.ROLES)
def simulate_version(key: str, version: int):
    """Try a deployed version on a simulated clock, as a draft is tried (no therapy is started)."""
    options = simulation_options()
    command = usecases.SimulateVersion(key=key, version=version, by=g.user, options=options)
    return usecases.simulate_version(command)
