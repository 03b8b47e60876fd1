"""DMN decision tables for business rule tasks.

A business rule task names its decision (``<spiffworkflow:calledDecisionId>``); the decision is a DMN 1.1, 1.2
or 1.3 file uploaded with the diagram or shipped in ``processes/``. ``parse_decisions`` reads such files with the
same hardened XML parser as diagrams, checks them against the DMN schema and checks every expression of every
table in the sandbox, refusing a file with ``DefinitionInvalid`` (or ``UnsafeCode``) naming the decision, the
rule and the line. ``register`` hands the checked files to SpiffWorkflow's parser, which copies each table into
the business rule task's spec: the tables are stored with the version's spec and run in the sandbox like any
other expression (``SandboxScriptEngine``), with the same time and memory limits as scripts.

One decision per file, holding one decision table. Input entries, input expressions and output entries are
Python expressions as SpiffWorkflow evaluates them: an input entry is compared with ``==`` to its input
(``"flu_cy"``, ``14``), or starts with an operator (``< 10``, ``in ("a", "b")``), or uses ``?`` for the input
(``5 <= ? <= 10``); ``-`` or an empty cell matches anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from .bpmn_xml import _parser, as_utf8
from .errors import DefinitionInvalid, UnsafeCode

DMN_NAMESPACES = (
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd",
    "http://www.omg.org/spec/DMN/20180521/MODEL/",
    "https://www.omg.org/spec/DMN/20191111/MODEL/",
)
# Hit policies SpiffWorkflow evaluates: the first matching rule (UNIQUE is not checked for overlaps and, like
# FIRST, takes the first match in table order), or every match's outputs as lists (COLLECT).
HIT_POLICIES = ("UNIQUE", "FIRST", "COLLECT")
_OUTPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
# ``?`` stands for the input's value, outside quoted strings (as SpiffWorkflow's DMN engine replaces it).
_QUESTION = re.compile(r"(\?)(?=(?:[^'\"]|['\"][^'\"]*['\"])*$)")


@dataclass(frozen=True)
class DecisionFile:
    """One checked DMN file: the decision it holds, its name and the file's text."""

    file: str
    decision_id: str
    name: str
    xml: str
    tree: Any  # the parsed lxml tree


def _dmn_parser_class():
    from SpiffWorkflow.dmn.parser.DMNParser import DMNParser

    class _TetherDMNParser(DMNParser):
        """An empty input cell matches anything, as ``-`` does (modelers leave cells empty); an entry that starts
        with an operator (``in ("EU", "UK")``) is joined to its input with a space (SpiffWorkflow joins them as
        they are, which would read ``regionin``)."""

        def parse(self):
            super().parse()
            for table in self.decision.decisionTables:
                for rule in table.rules:
                    for entry in rule.inputEntries:
                        text = (entry.text or "").strip()
                        entry.lhs = [None] if text in ("", "-") else [f" {text}"]

    return _TetherDMNParser


def _namespaces(root) -> dict[str, str]:
    from SpiffWorkflow.bpmn.parser.util import DEFAULT_NSMAP

    return {**DEFAULT_NSMAP, **{k: v for k, v in root.nsmap.items() if k}, "dmn": etree.QName(root).namespace}


def parse_decision_file(name: str, content: bytes) -> DecisionFile:
    """Parse and check one DMN file; refuse it (422) naming the file, decision, rule and line of the problem."""
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException

    def refuse(message: str, line: int | None = None, element_id: str | None = None, **details: Any):
        raise DefinitionInvalid(
            f"Decision file {name}: {message}", element_id=element_id, line=line, details={"file": name, **details}
        )

    if not content or not content.strip():
        refuse("the file is empty; upload a DMN 1.2 or 1.3 XML file.")
    content = as_utf8(content)
    if b"<!doctype" in content[:4096].lower() or b"<!entity" in content.lower():
        refuse("the file declares a DOCTYPE or entities, which are not allowed.")
    try:
        root = etree.fromstring(content, parser=_parser())
    except etree.XMLSyntaxError as exc:
        refuse(f"the file is not well-formed XML: {exc.msg}", getattr(exc, "lineno", None))
    namespace = etree.QName(root).namespace
    if etree.QName(root).localname != "definitions" or namespace not in DMN_NAMESPACES:
        refuse(
            "the file is not a DMN document: its root element must be definitions in the DMN 1.2 or 1.3 "
            f"namespace ({', '.join(DMN_NAMESPACES[1:])}).",
            root.sourceline,
        )
    ns = _namespaces(root)
    decisions = root.xpath("dmn:decision", namespaces=ns)
    if len(decisions) != 1:
        refuse(f"a decision file holds exactly one decision (this one has {len(decisions)}); split it into files.")
    decision = decisions[0]
    decision_id = decision.get("id")
    tables = decision.xpath("dmn:decisionTable", namespaces=ns)
    if len(tables) != 1:
        refuse(
            f"the decision {decision_id} must be one decision table (literal expressions and several tables are not "
            "supported).",
            decision.sourceline,
            decision_id,
            decision=decision_id,
        )
    policy = (tables[0].get("hitPolicy") or "UNIQUE").upper()
    if policy not in HIT_POLICIES:
        refuse(
            f"the decision {decision_id} has the hit policy {policy}; use one of {', '.join(HIT_POLICIES)}.",
            tables[0].sourceline,
            decision_id,
            decision=decision_id,
        )
    tree = etree.ElementTree(root)
    parser = _dmn_parser_class()(None, root, ns, filename=name)
    try:
        parser.parse()
    except ValidationException as exc:
        refuse(f"the decision {decision_id} cannot be read: {exc}", exc.line_number or None, decision=decision_id)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        refuse(f"the decision {decision_id} cannot be read: {type(exc).__name__}: {exc}", decision=decision_id)
    _check_table(name, decision_id, tree, parser.decision.decisionTables[0])
    return DecisionFile(
        file=name, decision_id=decision_id, name=decision.get("name") or decision_id, xml=content.decode(), tree=tree
    )


def _check_table(name: str, decision_id: str, tree, table) -> None:
    """Every expression of the table, as the sandbox will run it; refusals name the decision, rule and line."""
    from .sandbox import UnsafeSyntax, check_expression

    def line(element_id: str | None) -> int | None:
        found = tree.getroot().xpath("//*[@id=$id]", id=element_id) if element_id else []
        return found[0].sourceline if found else None

    def check(source: str, element_id: str, where: str, rule: int | None, *, entry: bool = False) -> None:
        details = {"file": name, "decision": decision_id, **({"rule": rule} if rule else {})}
        text = source.strip()
        try:
            if entry and _QUESTION.search(text):
                check_expression(_QUESTION.sub("dmninputexpr", text))
            elif entry:
                try:
                    check_expression(text)
                except UnsafeSyntax:
                    check_expression(f"v {text}")  # an entry that starts with an operator: "< 10"
            else:
                check_expression(text)
        except UnsafeCode as exc:
            kind = DefinitionInvalid if isinstance(exc, UnsafeSyntax) else UnsafeCode
            verb = "does not parse" if isinstance(exc, UnsafeSyntax) else "is refused"
            raise kind(
                f"Decision {decision_id} ({name}): {where} {verb}: {exc.message}",
                element_id=element_id,
                line=line(element_id),
                details=details,
            ) from None

    for column, table_input in enumerate(table.inputs, 1):
        if not (table_input.expression or "").strip():
            raise DefinitionInvalid(
                f"Decision {decision_id} ({name}): input column {column} ('{table_input.label}') has no input "
                "expression; write the variable or expression it reads.",
                element_id=table_input.id,
                line=line(table_input.id),
                details={"file": name, "decision": decision_id},
            )
        check(table_input.expression, table_input.id, f"the input expression of column {column}", None)
    for column, output in enumerate(table.outputs, 1):
        if not _OUTPUT_NAME.match(output.name or output.label or ""):
            raise DefinitionInvalid(
                f"Decision {decision_id} ({name}): output column {column} needs a name that is a variable name "
                f"(letters, digits and _, parts joined by dots), not '{output.name or output.label or ''}'.",
                element_id=output.id,
                line=line(output.id),
                details={"file": name, "decision": decision_id},
            )
    for rule in table.rules:
        for column, entry in enumerate(rule.inputEntries, 1):
            text = (entry.text or "").strip()
            if text and text != "-":
                check(text, entry.id, f"rule {rule.row_number}, input {column} ('{text}')", rule.row_number, entry=True)
        for column, entry in enumerate(rule.outputEntries, 1):
            text = (entry.text or "").strip()
            if text:
                check(text, entry.id, f"rule {rule.row_number}, output {column} ('{text}')", rule.row_number)


def parse_decisions(files: Mapping[str, bytes]) -> dict[str, DecisionFile]:
    """Every file checked, by the id of the decision it holds; two files with one decision id are refused."""
    out: dict[str, DecisionFile] = {}
    for name, content in files.items():
        parsed = parse_decision_file(name, content)
        if parsed.decision_id in out:
            raise DefinitionInvalid(
                f"The decision {parsed.decision_id} is in two files ({out[parsed.decision_id].file} and {name}); "
                "upload it once.",
                details={"decision": parsed.decision_id, "files": [out[parsed.decision_id].file, name]},
            )
        out[parsed.decision_id] = parsed
    return out


def stand_in(decision_id: str) -> DecisionFile:
    """An empty table standing in for a decision no file holds, so that a check collecting every problem can go on
    past the business rule task that calls it (never deployed: the missing decision is a problem)."""
    root = etree.Element(f"{{{DMN_NAMESPACES[2]}}}definitions", id="stand_in", name="stand-in", namespace="tether")
    decision = etree.SubElement(root, f"{{{DMN_NAMESPACES[2]}}}decision", id=decision_id, name=decision_id)
    table = etree.SubElement(decision, f"{{{DMN_NAMESPACES[2]}}}decisionTable", id="stand_in_table")
    etree.SubElement(table, f"{{{DMN_NAMESPACES[2]}}}output", id="stand_in_output", name="stand_in")
    tree = etree.ElementTree(root)
    return DecisionFile(
        file="", decision_id=decision_id, name=decision_id, xml=etree.tostring(root).decode(), tree=tree
    )


def register(parser, decisions: Mapping[str, DecisionFile]) -> None:
    """Give SpiffWorkflow's BPMN parser the decisions its business rule tasks may name."""
    cls = _dmn_parser_class()
    for decision_id, decision in decisions.items():
        root = decision.tree.getroot()
        parser.dmn_parsers[decision_id] = cls(parser, root, _namespaces(root), filename=decision.file)


def describe(file: str, xml: str) -> dict:
    """A stored decision as its table: id, name, hit policy, the input and output columns and every rule with its
    cells as written (for the designer's pages)."""
    parsed = parse_decision_file(file, xml.encode("utf-8"))
    root = parsed.tree.getroot()
    parser = _dmn_parser_class()(None, root, _namespaces(root), filename=file)
    parser.parse()
    table = parser.decision.decisionTables[0]
    return {
        "id": parsed.decision_id,
        "name": parsed.name,
        "file": file,
        "hit_policy": table.hit_policy,
        "inputs": [{"label": i.label or i.name or i.expression, "expression": i.expression} for i in table.inputs],
        "outputs": [{"label": o.label or o.name, "name": o.name or o.label} for o in table.outputs],
        "rules": [
            {
                "row": rule.row_number,
                "description": (rule.description or "").strip(),
                "inputs": [(e.text or "").strip() or "-" for e in rule.inputEntries],
                "outputs": [(e.text or "").strip() for e in rule.outputEntries],
            }
            for rule in table.rules
        ],
    }
