"""Process definitions: upload (with forms), list, versions, the XML as uploaded."""

from __future__ import annotations

from flask import Response, g, request
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import func, select

from server import usecases
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.inputs import ID_MAX
from server.store.extensions import db
from server.store.models import ProcessDefinition, Therapy
from server.workflow import migrations
from server.workflow.definitions import latest_version, version_calls, version_messages

from ..errors import BadRequest, NotFound
from . import bp
from .filters import whole_number
from .paging import page
from .views import definition_version


def _files(field: str) -> dict[str, bytes]:
    """The upload's files of one multipart field, by file name (a folder in the name is dropped)."""
    files = {}
    for upload in request.files.getlist(field):
        name = (upload.filename or "").rsplit("/", 1)[-1]
        if not name:
            raise BadRequest(f"Every '{field}' file needs a file name.", code="missing_file", details={"field": field})
        files[name] = upload.read()
    return files


@bp.post("/process-definitions")
@require(*usecases.DeployDefinition.ROLES)
@idempotent
def upload_definition():
    """Deploy a BPMN diagram (field ``bpmn``) with zero or more JSON Schema ``forms`` files and DMN ``decisions``
    files (the decision tables of its business rule tasks)."""
    if not request.content_type or not request.content_type.startswith("multipart/form-data"):
        from werkzeug.exceptions import UnsupportedMediaType

        raise UnsupportedMediaType("Upload the diagram as multipart/form-data with a 'bpmn' file field.")
    upload = request.files.get("bpmn")
    if upload is None:
        raise BadRequest("The upload has no 'bpmn' file field.", code="missing_file", details={"field": "bpmn"})
    forms, decisions = _files("forms"), _files("decisions")
    command = usecases.DeployDefinition(bpmn=upload.read(), forms=forms, decisions=decisions, by=g.user)
    row, created = usecases.deploy_definition(command)
    return definition_version(row), (201 if created else 200)


@bp.get("/process-definitions")
@require()
def list_definitions():
    """Every process key with its name and latest version."""
    latest = (
        select(ProcessDefinition.key, func.max(ProcessDefinition.version).label("v"))
        .group_by(ProcessDefinition.key)
        .subquery()
    )
    query = (
        select(ProcessDefinition)
        .join(latest, (ProcessDefinition.key == latest.c.key) & (ProcessDefinition.version == latest.c.v))
        .order_by(ProcessDefinition.key)
    )
    return page(query, lambda r: {"key": r.key, "name": r.name, "latest_version": r.version})


@bp.get("/process-definitions/<key>")
@require()
def get_definition(key: str):
    """One process key with all its versions and how many therapies run on each."""
    rows = (
        db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == key).order_by(ProcessDefinition.version)
        )
        .scalars()
        .all()
    )
    if not rows:
        raise NotFound(f"No process definition '{key}'.")
    counts = dict(
        db.session.execute(
            select(Therapy.process_version, func.count())
            .where(Therapy.process_key == key, Therapy.status == "active")
            .group_by(Therapy.process_version)
        ).all()
    )
    versions = [
        {
            "version": r.version,
            "id": r.id,
            "deployed_at": definition_version(r)["deployed_at"],
            "checksum": r.checksum,
            "active_therapies": counts.get(r.version, 0),
            "calls": version_calls(r),
        }
        for r in rows
    ]
    return {"key": key, "name": rows[-1].name, "versions": versions}


@bp.get("/process-definitions/<key>/versions/<int:version>/bpmn")
@require()
def get_definition_xml(key: str, version: int):
    """The BPMN XML exactly as uploaded."""
    row = db.session.execute(
        select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No version {version} of process definition '{key}'.")
    return Response(row.bpmn_xml, mimetype="application/xml")


@bp.get("/process-definitions/<key>/messages")
@require()
def definition_messages(key: str):
    """The messages a version (``version``, default the latest) waits for or starts on, each with its catching
    element and the JSON Schema its payload must satisfy (null when the diagram declares none)."""
    number = whole_number("version", 1, ID_MAX)
    if number is None:
        row = latest_version(key)
    else:
        row = db.session.execute(
            select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == number)
        ).scalar_one_or_none()
    if row is None:
        raise NotFound(
            f"No process definition '{key}'" + (f" version {number}" if number is not None else "") + ".",
            details={"key": key, "version": number},
        )
    return {"key": row.key, "version": row.version, "items": version_messages(row)}


class MigrationSchema(Schema):
    """POST /process-definitions/{key}/migrations."""

    class Meta:
        unknown = RAISE

    from_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=ID_MAX))
    to_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=ID_MAX))
    therapy_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=36)), load_default=None, allow_none=True
    )
    activity_map = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=200)),
        values=fields.String(validate=validate.Length(min=1, max=200)),
        load_default=dict,
    )
    dry_run = fields.Boolean(load_default=False)


@bp.post("/process-definitions/<key>/migrations")
@require(*usecases.MigrateTherapies.ROLES)
def migrate_therapies(key: str):
    """Move running therapies of one version to another (``dry_run`` first: which could move, and why not)."""
    body = load_json(MigrationSchema())
    results = usecases.migrate_therapies(usecases.MigrateTherapies(key=key, by=g.user, **body))
    return {"dry_run": body["dry_run"], "results": results}, 200


@bp.get("/process-definitions/<key>/diff")
@require()
def version_diff(key: str):
    """What changed between two versions (``from``, ``to``): element ids added, removed and changed."""
    old = migrations.version(key, whole_number("from", 1, ID_MAX), "from")
    new = migrations.version(key, whole_number("to", 1, ID_MAX), "to")
    return {"from": old.version, "to": new.version, **migrations.spec_diff(old, new)}
