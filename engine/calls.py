"""Call activities that call another deployed definition.

A call activity's ``calledElement`` names a process of its own file, else the key of a deployed definition. The
server finds the call activities of the second kind (``call_sites``), picks the version each binds (the one current
when the caller is deployed, or the one its ``calledVersion`` property names) and hands them to ``load_definition``
as ``CalledDefinition``s; ``bind_calls`` then copies the called version's specs into the caller's subprocess specs
and its tasks, forms, messages and decisions into the caller's info, so that a running therapy never changes when
the called process gets a new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from .bpmn_xml import NS
from .errors import DefinitionInvalid

# What a call activity's ``calledVersion`` may not say: a version chosen while the therapy runs.
_LATEST = "latest"


@dataclass(frozen=True)
class CallSite:
    """A call activity whose ``calledElement`` is no process of its file: it calls a deployed definition."""

    activity_id: str
    called: str
    line: int | None = None
    # The version its ``calledVersion`` property binds; None for the version current when the caller is deployed.
    version: int | None = None


@dataclass(frozen=True)
class CalledDefinition:
    """One deployed version a call activity binds: its key and version, its loaded definition
    (``engine.definition.Definition``) and the forms it was deployed with (file name -> schema)."""

    key: str
    version: int
    definition: Any
    forms: Mapping[str, dict] = field(default_factory=dict)


def _properties(element) -> dict[str, str]:
    props = {}
    path = "./bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property"
    for prop in element.xpath(path, namespaces=NS):
        if prop.get("name"):
            props[prop.get("name")] = prop.get("value", "")
    return props


def call_sites(tree) -> list[CallSite]:
    """The call activities of a parsed diagram that call a deployed definition, in document order.

    Refused (``DefinitionInvalid`` naming the element and line): a ``calledVersion`` that is no version number (a
    version chosen at run time, ``latest``, is not supported), and a ``calledVersion`` on a call activity whose
    called process is in the file itself."""
    root = tree.getroot()
    in_file = set(root.xpath("./bpmn:process/@id", namespaces=NS))
    sites = []
    for node in root.xpath("//bpmn:callActivity", namespaces=NS):
        activity_id, called = node.get("id"), node.get("calledElement") or ""
        if not called.strip():
            raise DefinitionInvalid(
                f"Call activity {activity_id} names no process to call: set its calledElement to the id of a "
                "process of this file or the key of a deployed definition.",
                element_id=activity_id,
                line=node.sourceline,
            )
        owner = node.xpath("ancestor::bpmn:process[1]/@id", namespaces=NS)
        if owner and owner[0] == called:
            raise DefinitionInvalid(
                f"Call activity {activity_id} calls its own process '{called}': a cycle of call activities never "
                "ends. Call another process.",
                element_id=activity_id,
                line=node.sourceline,
            )
        text = _properties(node).get("calledVersion")
        version = None
        if text is not None:
            value = text.strip()
            if value.lower() == _LATEST:
                raise DefinitionInvalid(
                    f"Call activity {activity_id} asks for calledVersion 'latest': a called version that changes "
                    "while the therapy runs is not supported. Leave calledVersion out to bind the version of "
                    f"'{called}' that is current when this diagram is deployed, or name a version number.",
                    element_id=activity_id,
                    line=node.sourceline,
                )
            if not value.isdigit() or int(value) < 1:
                raise DefinitionInvalid(
                    f"Call activity {activity_id} has calledVersion '{text}', which is no version number; name a "
                    f"deployed version of '{called}' (1, 2, ...) or leave calledVersion out.",
                    element_id=activity_id,
                    line=node.sourceline,
                )
            version = int(value)
        if called in in_file:
            if version is not None:
                raise DefinitionInvalid(
                    f"Call activity {activity_id} has a calledVersion, but '{called}' is a process of this file; "
                    "calledVersion binds a deployed definition. Remove the property.",
                    element_id=activity_id,
                    line=node.sourceline,
                )
            continue
        sites.append(CallSite(activity_id, called, node.sourceline, version))
    return sites


def in_file_subprocess_specs(parser, key: str) -> dict[str, Any]:
    """The specs of the subprocesses and called processes of ``key`` that its file holds (SpiffWorkflow's
    ``get_subprocess_specs``, leaving out the called processes the file does not hold)."""
    from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask

    used: dict[str, Any] = {}

    def walk(name: str) -> None:
        for task_spec in parser.get_spec(name).task_specs.values():
            if isinstance(task_spec, SubWorkflowTask) and task_spec.spec not in used:
                found = parser.get_spec(task_spec.spec, required=False)
                used[task_spec.spec] = found
                if found is not None:
                    walk(task_spec.spec)

    walk(key)
    return {name: spec for name, spec in used.items() if spec is not None}


def bind_calls(
    tree,
    subprocess_specs: dict[str, Any],
    info,
    forms: Mapping[str, dict],
    called: Mapping[str, CalledDefinition],
) -> None:
    """Bind every call activity of ``tree`` whose called process is not in the file to the deployed version
    ``called`` holds for its key: copy that version's specs into ``subprocess_specs`` and what it declares into
    ``info`` (``engine.definition.DefinitionInfo``), recording the binding in ``info.called``.

    Refused, naming the call activity and its line: a key ``called`` does not hold (deploy it first, or put its
    process in the file), a cycle (the called version calls this process back), and anything of the called version
    that clashes with this diagram's (a process, a user task or activity id, a form or a message schema that differ).
    """
    from .serialization import spec_from_dict, spec_to_dict

    def refuse(site: CallSite, message: str, **details) -> NoReturn:
        raise DefinitionInvalid(
            message, element_id=site.activity_id, line=site.line, details={"called_element": site.called, **details}
        )

    sources: dict[str, str] = {}  # process name -> where its spec came from ("this diagram", "'B' version 1")
    seen_forms = {name: (forms[name], "this diagram") for name in info.forms if name in forms}
    for site in call_sites(tree):
        target = called.get(site.called)
        if target is None:
            refuse(
                site,
                f"Call activity {site.activity_id} calls '{site.called}', which is neither a process of this file nor "
                f"a deployed definition. Deploy the definition '{site.called}' first, or include its process in "
                "this file.",
            )
        if site.version is not None and site.version != target.version:
            refuse(
                site,
                f"Call activity {site.activity_id} binds version {site.version} of '{site.called}', which "
                f"is not deployed.",
                version=site.version,
            )
        info.called[site.activity_id] = {"key": target.key, "version": target.version}
        theirs = target.definition.info
        where = f"'{target.key}' version {target.version}"
        back = [a for a, b in theirs.called.items() if b["key"] == info.key]
        if target.key == info.key or back or info.key in target.definition.subprocess_specs:
            through = f" (through its call activity {back[0]})" if back else ""
            refuse(
                site,
                f"Call activity {site.activity_id} calls {where}, which calls '{info.key}' back{through}: a cycle of "
                "call activities never ends. Remove one of the calls.",
            )
        document = target.definition.to_document()
        spec, specs = spec_from_dict(document)
        copies = {target.key: (spec, document["spec"])}
        copies.update({name: (specs[name], doc) for name, doc in document["subprocess_specs"].items()})
        for name, (copy, doc) in copies.items():
            if name in subprocess_specs:
                if spec_to_dict(subprocess_specs[name], {})["spec"] != doc:
                    source = sources.get(name, "this diagram")
                    refuse(
                        site,
                        f"Call activity {site.activity_id} calls {where}, which brings a process '{name}' that differs "
                        f"from the process '{name}' of {source}; rename one of them, or bind versions that agree.",
                    )
                continue
            subprocess_specs[name] = copy
            sources[name] = where
        _merge_info(site, info, theirs, where, refuse)
        for name in theirs.forms:
            schema = target.forms.get(name)
            if schema is None:
                refuse(
                    site,
                    f"Call activity {site.activity_id} calls {where}, which uses the form {name} but was "
                    "not deployed with it; deploy that definition again with the form.",
                    form=name,
                )
            if name in seen_forms and seen_forms[name][0] != schema:
                refuse(
                    site,
                    f"Call activity {site.activity_id} calls {where}, whose form {name} differs from the form {name} "
                    f"of {seen_forms[name][1]}; rename one of them.",
                    form=name,
                )
            seen_forms.setdefault(name, (schema, where))
            info.forms.append(name)
    info.messages = sorted(set(info.messages))
    info.operators = sorted(set(info.operators))
    info.forms = sorted(set(info.forms))


def _merge_info(site: CallSite, info, theirs, where: str, refuse) -> None:
    """Take over what the called version declares (its user tasks, activities, messages, decisions and nested
    bindings), refusing an id or message whose declaration differs from this diagram's."""
    for activity_id, task in theirs.user_tasks.items():
        if info.user_tasks.setdefault(activity_id, task) != task:
            refuse(
                site,
                f"Call activity {site.activity_id} calls {where}, whose user task {activity_id} has the id of another "
                "user task of this diagram; rename one of them.",
                activity_id=activity_id,
            )
    for activity_id, activity in theirs.activities.items():
        mine = info.activities.setdefault(activity_id, activity)
        if replace(mine, line=None, name="") != replace(activity, line=None, name=""):
            refuse(
                site,
                f"Call activity {site.activity_id} calls {where}, whose element {activity_id} has the id of a "
                "different element of this diagram; rename one of them.",
                activity_id=activity_id,
            )
    for name in sorted(set(info.messages) & set(theirs.messages)):
        mine, other = info.message_schemas.get(name), theirs.message_schemas.get(name)
        if mine != other:
            refuse(
                site,
                f"Call activity {site.activity_id} calls {where}, which checks the message '{name}' against "
                f"{other or 'no payloadSchema'}, while this diagram checks it against {mine or 'no payloadSchema'}; "
                "every element that catches one message declares the same payloadSchema (or none does).",
            )
    info.message_schemas.update(theirs.message_schemas)
    info.messages.extend(theirs.messages)
    info.operators.extend(theirs.operators)
    for task_id, decision in theirs.decisions.items():
        info.decisions.setdefault(task_id, decision)
    for activity_id, binding in theirs.called.items():  # the versions the called version binds, through this call
        nested = {"key": binding["key"], "version": binding["version"], "via": site.activity_id}
        info.called.setdefault(activity_id, nested)
