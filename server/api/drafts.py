"""The studio's drafts: diagrams saved, checked and deployed by designers; never run, never shown to site staff."""

from __future__ import annotations

from flask import g
from marshmallow import RAISE, Schema, fields, validate

from server import usecases
from server.access.auth import require
from server.api.schemas import load_json
from server.clock import iso
from server.errors import Invalid
from server.inputs import ID_MAX
from server.store.models import ProcessDraft
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
        "created_by": draft.created_by,
        "created_at": iso(draft.created_at),
        "updated_by": draft.updated_by,
        "updated_at": iso(draft.updated_at),
    }
    if with_xml:
        view["bpmn"] = draft.bpmn_xml
    return view


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
    return draft_view(draft), 201


@bp.get("/process-drafts/<draft_id>")
@require(*usecases.CreateDraft.ROLES)
def get_draft(draft_id: str):
    """One draft with its diagram."""
    return draft_view(drafts.find(draft_id))


@bp.put("/process-drafts/<draft_id>")
@require(*usecases.SaveDraft.ROLES)
def save_draft(draft_id: str):
    """Store the diagram as drawn (unfinished is fine: nothing is checked until asked)."""
    body = load_json(SaveDraftSchema())
    draft = usecases.save_draft(usecases.SaveDraft(draft_id=draft_id, by=g.user, **body))
    return draft_view(draft)


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
    row, created = usecases.deploy_draft(usecases.DeployDraft(draft_id=draft_id, by=g.user))
    return definition_version(row), (201 if created else 200)


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
