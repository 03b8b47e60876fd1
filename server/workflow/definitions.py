"""Deploying process definitions and finding the engine definition of a deployed version."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select

from engine.bpmn_xml import as_utf8, parse_bpmn
from engine.calls import CalledDefinition, call_sites
from engine.decisions import describe, parse_decisions
from engine.definition import (
    Definition,
    DefinitionInfo,
    checksum,
    collected,
    load_definition,
    message_catchers,
    parse_form,
)
from engine.errors import DefinitionInvalid
from engine.values import check_value
from server.integration import outbox
from server.store import audit
from server.store.extensions import db
from server.store.models import ProcessDefinition
from server.store.uow import unit_of_work
from server.workflow.operators import signatures

_cache: dict[str, Definition] = {}
_cache_lock = threading.Lock()


def bundled_forms_dir() -> Path:
    """The folder of forms shipped with the server."""
    configured = current_app.config.get("FORMS_DIR")
    return Path(configured) if configured else Path(current_app.root_path).parent / "forms"


def bundled_forms() -> dict[str, bytes]:
    """Every JSON file in the forms folder, by file name."""
    folder = bundled_forms_dir()
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def uploaded_form(name: str, content: bytes) -> dict:
    """An uploaded form file parsed and checked: a valid JSON Schema whose every value may be stored."""
    try:
        form = parse_form(name, content)
    except RecursionError:
        raise DefinitionInvalid(f"Form {name} is nested too deeply.", details={"form": name}) from None
    check_value({name: form}, where="forms")  # NaN, a NUL character or a lone surrogate could not be stored
    return form


def bundled_decisions_dir() -> Path:
    """The folder of DMN decisions shipped with the server (beside the bundled diagrams)."""
    configured = current_app.config.get("PROCESSES_DIR")
    return Path(configured) if configured else Path(current_app.root_path).parent / "processes"


def bundled_decisions(folder: Path | None = None) -> dict[str, bytes]:
    """Every DMN file in the folder of bundled diagrams, by file name."""
    folder = folder or bundled_decisions_dir()
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.dmn"))} if folder.is_dir() else {}


def deploy(
    bpmn: bytes,
    uploaded_forms: Mapping[str, bytes],
    actor: str,
    uploaded_decisions: Mapping[str, bytes] | None = None,
    shipped_decisions: Mapping[str, bytes] | None = None,
) -> tuple[ProcessDefinition, bool]:
    """Validate and store a new version; an identical upload returns the existing version (created=False).

    ``uploaded_decisions`` (DMN files by name) are checked, every one, and win over a shipped decision with the
    same id; ``shipped_decisions`` default to the DMN files of the bundled diagrams' folder."""
    bpmn = as_utf8(bpmn)  # stored and served as UTF-8 text, whatever encoding the file was saved in
    definition, available, decisions, bound = check(bpmn, uploaded_forms, uploaded_decisions, shipped_decisions)
    info = definition.info
    theirs = {task for row in bound.values() for task in (row.info.get("decisions") or {})}
    own = {d for task, d in info.decisions.items() if task not in theirs}
    used = {decisions[d].file: decisions[d].xml for d in sorted(own)}
    used = {**called_decisions(bound), **used}
    # The decisions a version evaluates are part of what it is: a changed table is a new version.
    digest = checksum(bpmn, {**uploaded_forms, **{f"decision:{n}": x.encode() for n, x in used.items()}})
    digest = checksum(digest.encode(), called_checksums(bound)) if bound else digest
    info.checksum = digest
    existing = db.session.execute(
        select(ProcessDefinition).where(ProcessDefinition.key == info.key, ProcessDefinition.checksum == digest)
    ).scalar_one_or_none()
    if existing is not None:
        return existing, False
    with unit_of_work():
        latest = db.session.execute(
            select(func.max(ProcessDefinition.version)).where(ProcessDefinition.key == info.key)
        ).scalar()
        row = ProcessDefinition(
            key=info.key,
            version=(latest or 0) + 1,
            name=info.name,
            checksum=digest,
            bpmn_xml=bpmn.decode("utf-8"),
            forms=version_forms(info, available, bound),
            decisions=used or None,
            info=info.to_dict(),
            spec=definition.to_document(),
            deployed_by=actor,
        )
        db.session.add(row)
        db.session.flush()
        data = {"key": row.key, "version": row.version, "name": row.name, "checksum": digest}
        audit.append(actor, "definition.deployed", "process_definition", row.id, data=data)
        outbox.emit("definition.deployed", data, subject=row.id)
    with _cache_lock:
        _cache[row.id] = definition
    return row, True


def check(
    bpmn: bytes,
    uploaded_forms: Mapping[str, bytes],
    uploaded_decisions: Mapping[str, bytes] | None = None,
    shipped_decisions: Mapping[str, bytes] | None = None,
    problems: list[DefinitionInvalid] | None = None,
) -> tuple[Definition, dict[str, dict], dict, dict[str, ProcessDefinition]]:
    """Every check of a deployment, storing nothing: the engine definition, the forms it may use (shipped, then
    uploaded), the decisions and the deployed versions its call activities bind. ``DefinitionInvalid`` (422)
    names the element and line of the first problem; with ``problems`` (a list, the studio's check) every problem
    the checks can go on past is added to it instead (``engine.definition.load_definition``)."""
    bpmn = as_utf8(bpmn)
    uploaded = parse_decisions(dict(uploaded_decisions or {}))
    decisions = {
        **parse_decisions(bundled_decisions() if shipped_decisions is None else dict(shipped_decisions)),
        **uploaded,
    }
    available = {name: parse_form(name, content) for name, content in bundled_forms().items()}
    for name, content in uploaded_forms.items():
        available[name] = uploaded_form(name, content)
    bound = bound_versions(bpmn, problems)
    definition = load_definition(bpmn, available, signatures(), decisions, called_definitions(bound), problems)
    return definition, available, decisions, bound


def engine_definition(row: ProcessDefinition) -> Definition:
    """The engine's definition for a stored version, restored once per process and cached."""
    with _cache_lock:
        cached = _cache.get(row.id)
    if cached is not None:
        return cached
    definition = Definition.from_document(DefinitionInfo.from_dict(row.info), row.spec)
    with _cache_lock:
        _cache[row.id] = definition
    return definition


def engine_definition_by_id(definition_id: str) -> Definition:
    """The engine's definition of a stored version by its id; the row is read only when not cached yet."""
    with _cache_lock:
        cached = _cache.get(definition_id)
    if cached is not None:
        return cached
    row = db.session.get(ProcessDefinition, definition_id)
    if row is None:
        raise LookupError(f"no process definition {definition_id}")
    return engine_definition(row)


_forms: dict[str, dict] = {}


def definition_forms(definition_id: str) -> dict:
    """The forms (JSON Schemas and ui-schemas by file name) of a stored version, read once per process."""
    forms = _forms.get(definition_id)
    if forms is None:
        row = db.session.get(ProcessDefinition, definition_id)
        forms = _forms[definition_id] = dict(row.forms) if row is not None else {}
    return forms


def message_schema(definition_id: str, name: str) -> tuple[str, dict] | None:
    """The file name and JSON Schema that a message ``name``'s payload must satisfy in a stored version (its
    catching elements' ``payloadSchema``), or None when the version declares none for it."""
    file = engine_definition_by_id(definition_id).info.message_schemas.get(name)
    schema = definition_forms(definition_id).get(file) if file else None
    return (file, schema) if file and schema is not None else None


def version_messages(row: ProcessDefinition) -> list[dict]:
    """Every message a stored version waits for or starts on, by catching element in document order: its name, the
    element, whether it starts a therapy, and the payload's JSON Schema (null when none is declared)."""
    definition = engine_definition(row)
    activities, schemas = definition.info.activities, definition.info.message_schemas
    forms = definition_forms(row.id)
    items = []
    for catcher in message_catchers(definition):
        file = schemas.get(catcher.name)
        activity = activities.get(catcher.activity_id)
        items.append(
            {
                "name": catcher.name,
                "activity_id": catcher.activity_id,
                "activity_name": activity.name if activity else catcher.activity_id,
                "starts_therapy": catcher.starts,
                "schema_file": file,
                "schema": forms.get(file) if file else None,
            }
        )
    return items


def latest_version(key: str) -> ProcessDefinition | None:
    """The newest version of ``key``."""
    return db.session.execute(
        select(ProcessDefinition)
        .where(ProcessDefinition.key == key)
        .order_by(ProcessDefinition.version.desc())
        .limit(1)
    ).scalar_one_or_none()


_start_messages: dict[str, frozenset[str]] = {}


def start_messages(definition_id: str) -> frozenset[str]:
    """Names of the messages whose start events begin an instance of this version (read from its XML, cached)."""
    from engine.bpmn_xml import NS, parse_bpmn

    with _cache_lock:
        cached = _start_messages.get(definition_id)
    if cached is not None:
        return cached
    key, xml = db.session.execute(
        select(ProcessDefinition.key, ProcessDefinition.bpmn_xml).where(ProcessDefinition.id == definition_id)
    ).one()
    root = parse_bpmn(xml.encode("utf-8")).getroot()
    names = {node.get("id"): node.get("name") for node in root.xpath("//bpmn:message", namespaces=NS)}
    refs = root.xpath(
        "bpmn:process[@id=$key]/bpmn:startEvent/bpmn:messageEventDefinition/@messageRef", namespaces=NS, key=key
    )
    found = frozenset(names[ref] for ref in refs if names.get(ref))
    with _cache_lock:
        _start_messages[definition_id] = found
    return found


def started_by_message(name: str, process_key: str | None = None) -> list[ProcessDefinition]:
    """The latest version of every process (or of ``process_key``) that a message ``name`` starts."""
    latest = (
        select(ProcessDefinition.key, func.max(ProcessDefinition.version).label("v"))
        .group_by(ProcessDefinition.key)
        .subquery()
    )
    query = (
        select(ProcessDefinition.id)
        .join(latest, (ProcessDefinition.key == latest.c.key) & (ProcessDefinition.version == latest.c.v))
        .order_by(ProcessDefinition.key)
    )
    if process_key:
        query = query.where(ProcessDefinition.key == process_key)
    ids = [
        definition_id for definition_id in db.session.execute(query).scalars() if name in start_messages(definition_id)
    ]
    return [db.session.get_one(ProcessDefinition, definition_id) for definition_id in ids]


def deploy_bundled(folder: Path, actor: str = "system") -> list[tuple[ProcessDefinition, bool]]:
    """Deploy every diagram in ``folder`` whose content is new."""
    results = []
    shipped = bundled_decisions(folder)
    for path in in_call_order(sorted(folder.glob("*.bpmn"))):
        results.append(deploy(path.read_bytes(), {}, actor, shipped_decisions=shipped))
    return results


def version_decisions(row: ProcessDefinition) -> list[dict]:
    """The decision tables a stored version evaluates, each with the business rule tasks that call it: id, name,
    file, hit policy, input and output columns and rules (``engine.decisions.describe``)."""
    callers: dict[str, list[str]] = {}
    for task_id, decision_id in sorted(engine_definition(row).info.decisions.items()):
        callers.setdefault(decision_id, []).append(task_id)
    tables = [describe(file, xml) for file, xml in sorted((row.decisions or {}).items())]
    return [{**table, "called_by": callers.get(table["id"], [])} for table in tables]


def bound_versions(bpmn: bytes, problems: list[DefinitionInvalid] | None = None) -> dict[str, ProcessDefinition]:
    """The deployed version each call activity of ``bpmn`` binds, by called key, for the call activities whose
    called process the file does not hold: the version its ``calledVersion`` names, else the latest. A key nothing
    is deployed under is left out (``load_definition`` refuses the call activity); a ``calledVersion`` that is not
    deployed, and two call activities binding different versions of one key, are refused naming the element (or
    added to ``problems`` when collecting)."""
    bound: dict[str, ProcessDefinition] = {}
    for site in call_sites(parse_bpmn(bpmn)):
        with collected(problems):
            _bind(site, bound)
    return bound


def _bind(site, bound: dict[str, ProcessDefinition]) -> None:
    """Bind one call site (``bound_versions``)."""
    if site.version is None:
        row = latest_version(site.called)
    else:
        row = db.session.execute(
            select(ProcessDefinition).where(
                ProcessDefinition.key == site.called, ProcessDefinition.version == site.version
            )
        ).scalar_one_or_none()
    if row is None and site.version is not None:
        versions = db.session.execute(
            select(ProcessDefinition.version)
            .where(ProcessDefinition.key == site.called)
            .order_by(ProcessDefinition.version)
        ).scalars()
        deployed = ", ".join(map(str, versions)) or "none"
        raise DefinitionInvalid(
            f"Call activity {site.activity_id} binds version {site.version} of '{site.called}' (calledVersion), "
            f"which is not deployed (deployed versions: {deployed}). Deploy it first, or name a deployed version.",
            element_id=site.activity_id,
            line=site.line,
            details={"called_element": site.called, "version": site.version},
        )
    if row is None:
        return
    if site.called in bound and bound[site.called].version != row.version:
        raise DefinitionInvalid(
            f"Call activity {site.activity_id} binds version {row.version} of '{site.called}', while another call "
            f"activity binds version {bound[site.called].version}; one version of a called process runs in a "
            "therapy: give both call activities the same calledVersion.",
            element_id=site.activity_id,
            line=site.line,
            details={"called_element": site.called},
        )
    bound[site.called] = row


def called_definitions(bound: Mapping[str, ProcessDefinition]) -> dict[str, CalledDefinition]:
    """The engine's view of the bound versions: each one's definition and the forms it was deployed with."""
    return {
        key: CalledDefinition(key=row.key, version=row.version, definition=engine_definition(row), forms=row.forms)
        for key, row in bound.items()
    }


def called_decisions(bound: Mapping[str, ProcessDefinition]) -> dict[str, str]:
    """The DMN files the bound versions evaluate (file name -> XML), kept with the caller's version."""
    files: dict[str, str] = {}
    for row in bound.values():
        for name, xml in (row.decisions or {}).items():
            files.setdefault(name, xml)
    return files


def called_checksums(bound: Mapping[str, ProcessDefinition]) -> dict[str, bytes]:
    """What a caller's checksum covers of the versions it binds: deploying the same caller after a new version of
    a called process binds that version, as a new version of the caller."""
    return {f"called:{key}": f"{row.version}:{row.checksum}".encode() for key, row in bound.items()}


def version_forms(info: DefinitionInfo, available: Mapping[str, dict], bound: Mapping[str, ProcessDefinition]) -> dict:
    """The forms a new version keeps: those of the versions it calls as they were deployed with (the engine
    refused any that differ from this upload's), then the uploaded or shipped ones."""
    stored: dict[str, dict] = {}
    for row in bound.values():
        stored.update(row.forms or {})
    return {name: stored[name] if name in stored else available[name] for name in info.forms}


def version_calls(row: ProcessDefinition) -> list[dict]:
    """The deployed definitions a stored version calls, by call activity of its own diagram, in activity order:
    ``{"activity_id", "key", "version"}`` (the versions those call in turn are bound with them)."""
    called = (row.info or {}).get("called") or {}
    return [
        {"activity_id": activity_id, "key": binding["key"], "version": binding["version"]}
        for activity_id, binding in sorted(called.items())
        if not binding.get("via")
    ]


def in_call_order(paths: list[Path]) -> list[Path]:
    """Bundled diagrams in an order that deploys a called process before the diagrams that call it (else by
    name)."""
    keys: dict[Path, str | None] = {}
    calls: dict[Path, set[str]] = {}
    for path in paths:
        try:
            tree = parse_bpmn(path.read_bytes())
            sites = call_sites(tree)
        except DefinitionInvalid:  # deploy() refuses it with the full message
            keys[path], calls[path] = None, set()
            continue
        executable = tree.getroot().xpath("./*[local-name()='process'][@isExecutable='true']/@id")
        keys[path] = executable[0] if executable else None
        calls[path] = {site.called for site in sites}
    ordered: list[Path] = []
    pending = list(paths)
    while pending:
        waiting = {keys[p] for p in pending}
        ready = [p for p in pending if not (calls[p] & waiting)] or pending[:1]
        ordered.extend(ready)
        pending = [p for p in pending if p not in ready]
    return ordered
