"""Hardened BPMN XML reading and an index of what the server needs to know about each element.

The parser never resolves entities, never loads a DTD and never touches the network; a document
with a DOCTYPE is refused outright (that is where entity bombs and external entities live).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from lxml import etree

from .errors import DefinitionInvalid

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}


# Byte order marks, longest first (UTF-32 LE starts like UTF-16 LE), and the codec that reads past each.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# How a document without a byte order mark starts in the wider encodings (XML 1.0, appendix F).
_WIDE_STARTS = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00?\x00", "utf-16-le"),
    (b"\x00<\x00?", "utf-16-be"),
)
_DECLARED = re.compile(rb"""^<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]{0,39})["']""")
_DECLARATION_ENCODING = re.compile(r"""^(<\?xml\s[^>]*?\bencoding\s*=\s*)(["'])[^"']*\2""")
SAVE_AS_UTF8 = "save the file as UTF-8 and upload it again"


def as_utf8(content: bytes) -> bytes:
    """``content`` as UTF-8: a document in another encoding (named by its byte order mark or its XML
    declaration, e.g. UTF-16 or ISO-8859-1) is decoded and re-encoded, its declaration saying UTF-8 from then on.

    Text that is stored and served again is always UTF-8; a document whose bytes do not match its encoding is
    refused with ``DefinitionInvalid`` asking for UTF-8.
    """
    bom_codec = next((codec for bom, codec in _BOMS if content.startswith(bom)), None)
    bom_codec = bom_codec or next((codec for start, codec in _WIDE_STARTS if content.startswith(start)), None)
    declared = _DECLARED.match(content)
    name = bom_codec or (declared.group(1).decode("ascii") if declared else "utf-8")
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise DefinitionInvalid(
            f"The file declares the encoding '{name}', which cannot be read here; {SAVE_AS_UTF8}.",
            details={"encoding": name},
        ) from None
    if bom_codec is None and codec.startswith(("utf-16", "utf-32")):
        raise DefinitionInvalid(
            f"The file declares the encoding '{name}' but is not written in it; {SAVE_AS_UTF8}.",
            details={"encoding": name},
        )
    if codec == "utf-8" and bom_codec is None:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionInvalid(
                f"The file is not valid UTF-8 text (nor declared in another encoding); {SAVE_AS_UTF8}.",
                line=content.count(b"\n", 0, exc.start) + 1,
                details={"encoding": name},
            ) from None
        return content
    try:
        text = content.decode(bom_codec or codec)
    except (UnicodeDecodeError, LookupError):  # LookupError: a codec that is not a text encoding (base64)
        raise DefinitionInvalid(
            f"The file is not valid {name} text; {SAVE_AS_UTF8}.", details={"encoding": name}
        ) from None
    text = _DECLARATION_ENCODING.sub(lambda match: f'{match.group(1)}"UTF-8"', text.removeprefix("\ufeff"), 1)
    return text.encode("utf-8", errors="strict")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_bpmn(content: bytes) -> etree._ElementTree:
    """Parse ``content`` as a BPMN 2.0 document, refusing anything that is not plain, safe XML."""
    if not content or not content.strip():
        raise DefinitionInvalid("The file is empty; upload a BPMN 2.0 XML file.")
    head = content[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in content.lower():
        raise DefinitionInvalid("The file declares a DOCTYPE or entities, which are not allowed in a BPMN upload.")
    try:
        tree = etree.ElementTree(etree.fromstring(content, parser=_parser()))
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if getattr(exc, "lineno", None) else None
        raise DefinitionInvalid(f"The file is not well-formed XML: {exc.msg}", line=line) from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise DefinitionInvalid("The file declares a DOCTYPE, which is not allowed in a BPMN upload.")
    root = tree.getroot()
    if root.tag != f"{{{BPMN_NS}}}definitions":
        raise DefinitionInvalid(
            "The file is not a BPMN 2.0 document: its root element must be bpmn:definitions "
            f"in the namespace {BPMN_NS}.",
            line=root.sourceline,
        )
    return tree


@dataclass
class ElementInfo:
    """What the XML says about one flow element (or the process) beyond what SpiffWorkflow keeps."""

    id: str
    tag: str
    name: str | None
    line: int | None
    lane: str | None = None
    lane_properties: dict[str, str] = field(default_factory=dict)
    attached_to: str | None = None
    cancel_activity: bool = True
    properties: dict[str, str] = field(default_factory=dict)


def _local(tag: str) -> str:
    return tag.split("}", 1)[1] if "}" in tag else tag


def _properties(element) -> dict[str, str]:
    props = {}
    for prop in element.xpath(
        "./bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property", namespaces=NS
    ):
        if prop.get("name"):
            props[prop.get("name")] = prop.get("value", "")
    return props


def index_process(process) -> dict[str, ElementInfo]:
    """Map every element id inside ``process`` (and the process itself) to its ``ElementInfo``."""
    lanes: dict[str, tuple[str, dict[str, str]]] = {}
    for lane in process.xpath(".//bpmn:lane", namespaces=NS):
        for ref in lane.xpath("./bpmn:flowNodeRef", namespaces=NS):
            if ref.text:
                lanes[ref.text.strip()] = (lane.get("name") or lane.get("id"), _properties(lane))
    index = {
        process.get("id"): ElementInfo(
            id=process.get("id"),
            tag="process",
            name=process.get("name"),
            line=process.sourceline,
            properties=_properties(process),
        )
    }
    for element in process.iter():
        if not isinstance(element.tag, str) or not element.tag.startswith(f"{{{BPMN_NS}}}"):
            continue
        element_id = element.get("id")
        if not element_id or element is process:
            continue
        index[element_id] = ElementInfo(
            id=element_id,
            tag=_local(element.tag),
            name=element.get("name"),
            line=element.sourceline,
            lane=lanes[element_id][0] if element_id in lanes else None,
            lane_properties=lanes[element_id][1] if element_id in lanes else {},
            attached_to=element.get("attachedToRef"),
            cancel_activity=element.get("cancelActivity", "true").lower() != "false",
            properties=_properties(element),
        )
    return index


def line_of(tree, element_id: str | None) -> int | None:
    """The source line of the element with ``element_id``, when there is one."""
    if not element_id:
        return None
    found = tree.getroot().xpath("//*[@id=$id]", id=element_id)
    return found[0].sourceline if found else None


def element_at_line(tree, line: int | None) -> str | None:
    """The id of the nearest element with an id that starts at or before ``line``."""
    if not line:
        return None
    best = None
    for element in tree.getroot().iter():
        if isinstance(element.tag, str) and element.get("id") and element.sourceline and element.sourceline <= line:
            best = element.get("id")
    return best
