"""Drafts of the studio: a diagram saved, checked as it is drawn and deployed when it passes every check.

A draft is never run as a therapy (only tried on a simulated clock, ``simulation.py``) and never shown to site
staff. It keeps the uploaded forms and decision tables of the
version it started from, so that it passes the same checks that version passed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sqlalchemy import func, select

from engine.errors import DefinitionInvalid, EngineError
from server.clock import iso, utcnow
from server.errors import ApiError, Conflict, Invalid, NotFound
from server.store import audit
from server.store.extensions import db
from server.store.models import ProcessDefinition, ProcessDraft, Therapy
from server.store.uow import unit_of_work
from server.workflow import definitions

# What a new draft starts from: a process with one start event, on a diagram the modeler can draw on.
EMPTY_DIAGRAM = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
    xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
    id="Definitions_{key}" targetNamespace="http://tether.example/bpmn">
  <bpmn:process id="{key}" name="{name}" isExecutable="true">
    <bpmn:startEvent id="StartEvent_1" name="Start" />
  </bpmn:process>
  <bpmndi:BPMNDiagram id="Diagram_1">
    <bpmndi:BPMNPlane id="Plane_1" bpmnElement="{key}">
      <bpmndi:BPMNShape id="StartEvent_1_di" bpmnElement="StartEvent_1">
        <dc:Bounds x="180" y="160" width="36" height="36" />
      </bpmndi:BPMNShape>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"""


def empty_diagram(key: str, name: str) -> str:
    """The XML of a new process ``key`` called ``name``: one start event."""
    from xml.sax.saxutils import escape

    return EMPTY_DIAGRAM.format(key=escape(key, {'"': "&quot;"}), name=escape(name, {'"': "&quot;"}))


def find(draft_id: str) -> ProcessDraft:
    """The draft, or 404."""
    draft = db.session.get(ProcessDraft, draft_id)
    if draft is None:
        raise NotFound("No such draft.", details={"draft_id": draft_id})
    return draft


def deployed(key: str, version: int) -> ProcessDefinition:
    """A deployed version, or 404 naming it."""
    row = db.session.execute(
        select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No version {version} of process definition '{key}'.", details={"key": key, "version": version})
    return row


def create(name: str, actor: str, key: str | None = None, version: int | None = None) -> ProcessDraft:
    """A new draft: an empty canvas (process id made from the name), or a copy of deployed version ``version`` of
    ``key`` with its forms and decision tables. Audited."""
    if key is not None:
        row = deployed(key, version or 0) if version else definitions.latest_version(key)
        if row is None:
            raise NotFound(f"No process definition '{key}'.", details={"key": key})
        draft = ProcessDraft(
            name=name or row.name,
            bpmn_xml=row.bpmn_xml,
            forms=dict(row.forms or {}),
            decisions=dict(row.decisions) if row.decisions else None,
            based_on_key=row.key,
            based_on_version=row.version,
        )
    else:
        draft = ProcessDraft(name=name, bpmn_xml=empty_diagram(process_key(name), name), forms={})
    draft.created_by = draft.updated_by = actor
    with unit_of_work():
        db.session.add(draft)
        db.session.flush()
        data = {"name": draft.name, "based_on": based_on(draft)}
        audit.append(actor, "draft.created", "process_draft", draft.id, data=data)
    return draft


def process_key(name: str) -> str:
    """A process id (an XML name) made from a draft's name: ``Bone marrow v2`` -> ``bone_marrow_v2``."""
    letters = "".join(c.lower() if c.isascii() and c.isalnum() else "_" for c in name).strip("_")
    while "__" in letters:
        letters = letters.replace("__", "_")
    letters = letters[:60] or "new_process"
    return letters if letters[0].isalpha() else f"process_{letters}"


def etag(draft: ProcessDraft) -> str:
    """The draft's version as it is now (its name, diagram, forms and decision tables): a save that names an older
    one is refused (``fresh``), so that two designers never overwrite each other's work unseen."""
    digest = hashlib.sha256()
    for part in (draft.name, draft.bpmn_xml, json.dumps(draft.forms or {}, sort_keys=True)):
        digest.update(part.encode("utf-8") + b"\0")
    digest.update(json.dumps(draft.decisions or {}, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:20]


def fresh(draft: ProcessDraft, if_match: str | None) -> None:
    """Refuse (409 ``draft_changed``) a change made to the draft as it was at ``if_match`` (its ``etag`` then) when
    someone has changed it since; without ``if_match`` the change is made to the draft as it is."""
    if if_match is None:
        return
    wanted = if_match.strip().removeprefix("W/").strip('"')
    if wanted in ("*", etag(draft)):
        return
    raise Conflict(
        f"The draft was changed by {draft.updated_by} at {iso(draft.updated_at)} since you opened it; reload it to "
        "see their change, then make yours again (nothing was saved).",
        code="draft_changed",
        details={
            "draft_id": draft.id,
            "updated_by": draft.updated_by,
            "updated_at": iso(draft.updated_at),
            "etag": etag(draft),
        },
    )


def _still(draft: ProcessDraft, if_match: str | None) -> None:
    """Inside a change's unit of work: the draft read again under a write lock, then refused (``fresh``) when it
    changed since ``if_match``, so that of two saves made to one version only the first is made."""
    if if_match is None:
        return
    db.session.execute(select(ProcessDraft.id).where(ProcessDraft.id == draft.id).with_for_update())
    db.session.refresh(draft)
    fresh(draft, if_match)


def save(
    draft: ProcessDraft, bpmn: str, actor: str, name: str | None = None, if_match: str | None = None
) -> ProcessDraft:
    """Store the diagram as drawn (checked only when asked: a draft may be unfinished); 409 when the draft changed
    since ``if_match``. Audited."""
    with unit_of_work():
        _still(draft, if_match)
        draft.bpmn_xml = bpmn
        if name:
            draft.name = name
        draft.updated_by, draft.updated_at = actor, utcnow()
        audit.append(actor, "draft.saved", "process_draft", draft.id, data={"name": draft.name, "size": len(bpmn)})
    return draft


def delete(draft: ProcessDraft, actor: str) -> None:
    """Remove the draft (deployed versions made from it stay). Audited."""
    with unit_of_work():
        audit.append(actor, "draft.deleted", "process_draft", draft.id, data={"name": draft.name})
        db.session.delete(draft)


# A file name a draft keeps a form or decision table under: letters, digits, dots, dashes and underscores.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def _file_name(name: str, suffix: str, what: str) -> None:
    if not _FILE_NAME.match(name or "") or not name.endswith(suffix):
        raise Invalid(
            f"'{name}' is not a {what} file name: letters, digits, '.', '-' and '_', at most 120 characters, ending "
            f"in {suffix}.",
            details={"fields": {"name": [f"A file name ending in {suffix}."]}, "file": name},
        )


def decision_files(draft: ProcessDraft) -> list[dict[str, Any]]:
    """The draft's decision tables: file name, the decision's id and name, by file name."""
    from engine.decisions import parse_decisions

    parsed = parse_decisions(_decisions(draft))
    return sorted(
        ({"name": d.file, "decision_id": d.decision_id, "decision_name": d.name} for d in parsed.values()),
        key=lambda item: item["name"],
    )


def decision_xml(draft: ProcessDraft, name: str) -> str:
    """One decision table's DMN XML, or 404."""
    xml = (draft.decisions or {}).get(name)
    if xml is None:
        raise NotFound(f"The draft has no decision file {name}.", details={"draft_id": draft.id, "file": name})
    return xml


def form_schema(draft: ProcessDraft, name: str) -> dict:
    """One form file the draft keeps, or 404."""
    schema = (draft.forms or {}).get(name)
    if schema is None:
        raise NotFound(f"The draft has no form file {name}.", details={"draft_id": draft.id, "file": name})
    return schema


def put_decision(
    draft: ProcessDraft, name: str, content: bytes, actor: str, if_match: str | None = None
) -> ProcessDraft:
    """Keep the DMN file ``name`` with the draft (replacing one of that name), checked as an upload checks it: 422
    naming the file, the decision and the line of the problem, and nothing changed. Audited."""
    from engine.decisions import parse_decisions

    _file_name(name, ".dmn", "decision")
    others = {n: x.encode("utf-8") for n, x in (draft.decisions or {}).items() if n != name}
    parsed = parse_decisions({**others, name: content})  # one decision id per file, checked with the others
    decision = next(d for d in parsed.values() if d.file == name)
    with unit_of_work():
        _still(draft, if_match)
        draft.decisions = {**(draft.decisions or {}), name: decision.xml}
        draft.updated_by, draft.updated_at = actor, utcnow()
        data = {"file": name, "decision": decision.decision_id, "size": len(decision.xml)}
        audit.append(actor, "draft.decision_saved", "process_draft", draft.id, data=data)
    return draft


def delete_decision(draft: ProcessDraft, name: str, actor: str, if_match: str | None = None) -> ProcessDraft:
    """Remove a DMN file from the draft (404 when it has none of that name). Audited."""
    decision_xml(draft, name)
    with unit_of_work():
        _still(draft, if_match)
        draft.decisions = {n: x for n, x in (draft.decisions or {}).items() if n != name} or None
        draft.updated_by, draft.updated_at = actor, utcnow()
        audit.append(actor, "draft.decision_deleted", "process_draft", draft.id, data={"file": name})
    return draft


def put_form(draft: ProcessDraft, name: str, content: bytes, actor: str, if_match: str | None = None) -> ProcessDraft:
    """Keep the JSON Schema form ``name`` with the draft (replacing one of that name), checked as an upload checks
    it: 422 naming the file (and the line of a JSON syntax error), and nothing changed. Audited."""
    _file_name(name, ".json", "form")
    schema = definitions.uploaded_form(name, content)
    with unit_of_work():
        _still(draft, if_match)
        draft.forms = {**(draft.forms or {}), name: schema}
        draft.updated_by, draft.updated_at = actor, utcnow()
        audit.append(actor, "draft.form_saved", "process_draft", draft.id, data={"file": name, "size": len(content)})
    return draft


def delete_form(draft: ProcessDraft, name: str, actor: str, if_match: str | None = None) -> ProcessDraft:
    """Remove a form file from the draft (404 when it has none of that name). Audited."""
    form_schema(draft, name)
    with unit_of_work():
        _still(draft, if_match)
        draft.forms = {n: f for n, f in (draft.forms or {}).items() if n != name}
        draft.updated_by, draft.updated_at = actor, utcnow()
        audit.append(actor, "draft.form_deleted", "process_draft", draft.id, data={"file": name})
    return draft


def _forms(draft: ProcessDraft) -> dict[str, bytes]:
    return {name: json.dumps(schema).encode() for name, schema in (draft.forms or {}).items()}


def _decisions(draft: ProcessDraft) -> dict[str, bytes]:
    return {name: xml.encode() for name, xml in (draft.decisions or {}).items()}


def problem(exc: EngineError | ApiError) -> dict[str, Any]:
    """One problem as the studio pins it: its code, sentence, element id and line (null when not known)."""
    details = exc.as_details() if isinstance(exc, EngineError) else dict(exc.details)
    element = details.pop("element_id", None) or details.pop("element", None)
    return {
        "code": exc.code,
        "message": exc.message,
        "element_id": element,
        "line": details.pop("line", None),
        "details": details,
    }


def problems(found: list[DefinitionInvalid], last: EngineError | ApiError | None = None) -> list[dict[str, Any]]:
    """The problems a check found, each once, in the order of the file (those without a line last), then the one
    that stopped it (``last``), if any."""
    seen: set[tuple] = set()
    out = []
    for exc in sorted(found, key=lambda e: (e.line is None, e.line or 0)) + ([last] if last is not None else []):
        item = problem(exc)
        mark = (item["element_id"], item["message"])
        if mark not in seen:
            seen.add(mark)
            out.append(item)
    return out


def check(draft: ProcessDraft, bpmn: str | None = None, *, compare: bool = True) -> dict[str, Any]:
    """Run every check of a deployment on the draft (or on ``bpmn``, the diagram as drawn, with the draft's forms
    and decision tables) and store nothing. ``problems`` lists every problem the checks found, each on its element
    with its line, in the order of the file; a diagram without problems names the latest deployed version of its
    process (``current``: its version and active therapies) and, with ``compare``, what changed against it
    (``diff``)."""
    text = draft.bpmn_xml if bpmn is None else bpmn
    result: dict[str, Any] = {"problems": [], "key": None, "current": None, "diff": None}
    found: list[DefinitionInvalid] = []
    try:
        definition, _forms_used, _decisions_used, _bound = definitions.check(
            text.encode("utf-8"), _forms(draft), _decisions(draft), problems=found
        )
    except (EngineError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status != 422:
            raise
        result["problems"] = problems(found, exc)
        return result
    if found:
        result["problems"] = problems(found)
        return result
    key = definition.info.key
    result["key"] = key
    current = definitions.latest_version(key)
    if current is not None:
        result["current"] = {
            "key": key,
            "version": current.version,
            "active_therapies": db.session.execute(
                select(func.count()).where(
                    Therapy.process_key == key,
                    Therapy.process_version == current.version,
                    Therapy.status == "active",
                )
            ).scalar_one(),
        }
        if compare:
            result["diff"] = spec_diff(definitions.engine_definition(current).spec, definition.spec)
    return result


def spec_diff(before: Any, after: Any) -> dict[str, list[str]]:
    """The element ids ``after`` added, removed and changed against ``before``."""
    from SpiffWorkflow.bpmn.util.diff import SpecDiff

    from engine.serialization import spec_registry

    diff = SpecDiff(spec_registry(), before, after)

    def elements(specs) -> list[str]:
        return sorted({s.bpmn_id for s in specs if getattr(s, "bpmn_id", None)})

    return {"added": elements(diff.added), "removed": elements(diff.removed), "changed": elements(diff.changed)}


def deploy(draft: ProcessDraft, actor: str) -> tuple[ProcessDefinition, bool, dict | None]:
    """Deploy the draft as the next version of its process when it passes every check; refused (422, with every
    problem) otherwise. The draft then starts from the version it made. Audited. Returns the version, whether it
    is new, and the version it follows as the check found it before the deploy (``check``'s ``current``: its
    version and active therapies; None for a new process)."""
    checked = check(draft, compare=False)
    if checked["problems"]:
        first = checked["problems"][0]
        where = f" (element {first['element_id']})" if first["element_id"] else ""
        raise Invalid(
            f"The draft cannot be deployed: {first['message']}{where}",
            code="draft_invalid",
            details={"draft_id": draft.id, "problems": checked["problems"]},
        )
    with unit_of_work():
        row, created = definitions.deploy(draft.bpmn_xml.encode("utf-8"), _forms(draft), actor, _decisions(draft))
        draft.based_on_key, draft.based_on_version = row.key, row.version
        draft.updated_by, draft.updated_at = actor, utcnow()
        data = {"key": row.key, "version": row.version, "created": created}
        audit.append(actor, "draft.deployed", "process_draft", draft.id, data=data)
    return row, created, checked["current"]


def based_on(draft: ProcessDraft) -> dict | None:
    """The deployed version a draft started from (or last deployed), or None for a draft from an empty canvas."""
    if draft.based_on_key is None:
        return None
    return {"key": draft.based_on_key, "version": draft.based_on_version}


def listing() -> list[ProcessDraft]:
    """Every draft, the most recently changed first."""
    return list(db.session.execute(select(ProcessDraft).order_by(ProcessDraft.updated_at.desc())).scalars())
