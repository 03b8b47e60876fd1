"""A task's JSON Schema form as HTML fields: what to draw for each property, with its value and error.

Supports what the bundled forms and designers use: text, textarea, numbers (with units and bounds),
dates, date-times and times, enums (select or radios), booleans (checkbox or yes/no), COI scans, slot pickers
(a string named ``<kind>_slot_id``, or with ``ui:widget: slot`` and ``ui:options.kind``, for a kind of capacity;
the task page fills in the free slots), nested objects, arrays of objects or of simple values (rows), and the
ui-schema hints ``ui:order``,
``ui:widget``, ``ui:help``, ``ui:placeholder``, ``ui:autofocus``, ``ui:title``, ``ui:description``,
``ui:enumNames``, ``ui:unit`` and ``ui:prefill`` (a dotted path into the therapy's process data whose value fills
the field in before the user types: the task page passes it among the values; the field says where it comes from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.store.models import SLOT_KINDS

SCAN_FIELD = "scanned_coi"
ROW_INDEX = "__index__"
# Units named by a property's suffix, used when neither the schema nor the ui schema names one.
UNIT_SUFFIXES = {
    "_c": "°C",
    "_ml": "mL",
    "_l": "L",
    "_min": "min",
    "_h": "h",
    "_hours": "h",
    "_days": "days",
    "_kg": "kg",
    "_g": "g",
    "_mg": "mg",
    "_e6": "×10⁶ cells",
    "_e9": "×10⁹ cells",
    "_pct": "%",
    "_percent": "%",
}


@dataclass
class Field:
    """One input (or group of inputs) of a form, ready for the template."""

    name: str
    key: str
    path: str
    label: str
    kind: str
    required: bool = False
    description: str | None = None
    help: str | None = None
    placeholder: str | None = None
    autofocus: bool = False
    unit: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    value: Any = ""
    error: str | None = None
    must_tick: bool = False
    slot_kind: str | None = None
    children: list[Field] = field(default_factory=list)
    rows: list[list[Field]] = field(default_factory=list)
    template: list[Field] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The HTML id of the input."""
        return "f-" + self.name.replace(".", "-")


def ordered_keys(properties: dict, ui_schema: dict) -> list[str]:
    """Property names in ``ui:order`` (with ``*`` standing for the rest), else in schema order."""
    order = ui_schema.get("ui:order") or []
    keys = list(properties)
    if not order:
        return keys
    listed = [k for k in order if k in properties]
    rest = [k for k in keys if k not in listed]
    if "*" in order:
        at = order.index("*")
        before = [k for k in order[:at] if k in properties]
        after = [k for k in order[at + 1 :] if k in properties]
        return before + rest + after
    return listed + rest


def options_of(prop: dict, ui: dict) -> list[tuple[Any, str]]:
    """(value, label) pairs of an enum or a oneOf/anyOf of consts."""
    names = ui.get("ui:enumNames") or []
    if "enum" in prop:
        return [(v, names[i] if i < len(names) else str(v)) for i, v in enumerate(prop["enum"])]
    choices = prop.get("oneOf") or prop.get("anyOf") or []
    if choices and all(isinstance(c, dict) and "const" in c for c in choices):
        return [(c["const"], c.get("title") or str(c["const"])) for c in choices]
    return []


def _unit(key: str, prop: dict, ui: dict) -> str | None:
    unit = ui.get("ui:unit") or prop.get("x-unit") or prop.get("unit")
    if unit:
        return str(unit)
    for suffix, name in UNIT_SUFFIXES.items():
        if key.endswith(suffix):
            return name
    return None


def _number_attrs(prop: dict, integer: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"step": prop.get("multipleOf") or (1 if integer else "any")}
    if "minimum" in prop:
        attrs["min"] = prop["minimum"]
    if "maximum" in prop:
        attrs["max"] = prop["maximum"]
    if "exclusiveMinimum" in prop:
        attrs["data-exclusive-min"] = prop["exclusiveMinimum"]
    if "exclusiveMaximum" in prop:
        attrs["data-exclusive-max"] = prop["exclusiveMaximum"]
    return attrs


def _string_attrs(prop: dict) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if "minLength" in prop:
        attrs["minlength"] = prop["minLength"]
    if "maxLength" in prop:
        attrs["maxlength"] = prop["maxLength"]
    if "pattern" in prop:
        attrs["pattern"] = prop["pattern"]
    return attrs


def slot_kind(key: str, prop: dict, ui: dict) -> str | None:
    """The kind of capacity a string property picks a slot of: ``ui:options.kind`` with ``ui:widget: slot``, or
    the ``<kind>`` of a property named ``<kind>_slot_id``; None for any other property."""
    if prop.get("type") not in ("string", ["string", "null"], ["null", "string"]):
        return None
    if ui.get("ui:widget") == "slot":
        kind = (ui.get("ui:options") or {}).get("kind")
        return kind if kind in SLOT_KINDS else None
    named = key.removesuffix("_slot_id")
    return named if named != key and named in SLOT_KINDS else None


def kind_of(key: str, prop: dict, ui: dict) -> str:
    """Which widget draws a property."""
    widget = ui.get("ui:widget")
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if widget == "hidden":
        return "hidden"
    if options_of(prop, ui):
        return "radio" if widget in ("radio", "radios") else "select"
    if kind == "boolean":
        return "yesno" if widget in ("radio", "radios", "select") else "checkbox"
    if kind in ("number", "integer"):
        return kind
    if kind == "array":
        items = prop.get("items") or {}
        if options_of(items, {}):
            return "multi"
        return "table"
    if kind == "object":
        return "group"
    if slot_kind(key, prop, ui):
        return "slot"
    if key == SCAN_FIELD or widget == "scan":
        return "scan"
    fmt = prop.get("format")
    if fmt in ("date", "time"):
        return fmt
    if fmt == "date-time":
        return "datetime"
    if widget in ("textarea", "password", "email", "url"):
        return widget
    if fmt in ("email", "uri"):
        return "email" if fmt == "email" else "url"
    return "text"


def build_fields(
    schema: dict,
    ui_schema: dict | None,
    values: dict[str, Any],
    errors: dict[str, str],
    prefix: str = "data",
    path: str = "",
) -> list[Field]:
    """The fields of an object schema; ``values`` are the inputs' texts by HTML name, ``errors`` by data path."""
    ui_schema = ui_schema or {}
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out = []
    for key in ordered_keys(properties, ui_schema):
        prop = properties[key] if isinstance(properties[key], dict) else {}
        ui = ui_schema.get(key) or {}
        out.append(
            _field(key, prop, ui, key in required, values, errors, f"{prefix}.{key}", f"{path}.{key}" if path else key)
        )
    return out


def _field(key: str, prop: dict, ui: dict, required: bool, values: dict, errors: dict, name: str, path: str) -> Field:
    kind = kind_of(key, prop, ui)
    item = Field(
        name=name,
        key=key,
        path=path,
        kind=kind,
        required=required,
        label=ui.get("ui:title") or prop.get("title") or key.replace("_", " ").capitalize(),
        description=ui.get("ui:description") or prop.get("description"),
        help=_help(ui),
        placeholder=ui.get("ui:placeholder"),
        autofocus=bool(ui.get("ui:autofocus")),
        error=errors.get(path),
    )
    default = prop.get("default")
    item.value = values.get(name, "" if default is None else default)
    if kind in ("select", "radio"):
        item.options = [(_text(v), label) for v, label in options_of(prop, ui)]
        item.value = _text(item.value)
    elif kind == "multi":
        item.options = [(_text(v), label) for v, label in options_of(prop.get("items") or {}, ui.get("items") or {})]
        chosen = values.get(name, default or [])
        item.value = [_text(v) for v in (chosen if isinstance(chosen, list) else [chosen])]
    elif kind in ("checkbox", "yesno"):
        item.must_tick = prop.get("const") is True
        if kind == "checkbox":
            item.value = values.get(name) in (True, "true", "on") or (name not in values and default is True)
    elif kind in ("number", "integer"):
        item.attrs, item.unit = _number_attrs(prop, kind == "integer"), _unit(key, prop, ui)
    elif kind == "group":
        item.children = build_fields(prop, ui, values, errors, name, path)
    elif kind == "table":
        _rows(item, prop, ui, values, errors)
    elif kind == "slot":
        item.slot_kind, item.value = slot_kind(key, prop, ui), _text(item.value)
    else:
        item.attrs = _string_attrs(prop)
    return item


def _help(ui: dict) -> str | None:
    """The field's ``ui:help``, and where a prefilled value comes from."""
    text = ui.get("ui:help")
    path = ui.get("ui:prefill")
    if isinstance(path, str) and path.strip():
        source = f"Filled in from the therapy's data ({path.strip()}) when known; you may change it."
        return f"{text} {source}" if text else source
    return text


def _rows(item: Field, prop: dict, ui: dict, values: dict, errors: dict) -> None:
    """An array drawn as rows: existing rows from ``values``, at least ``minItems`` (or one), and a template."""
    items = prop.get("items") or {}
    item_ui = ui.get("items") or {}
    wrapped = items.get("type") != "object"
    row_schema = {"type": "object", "properties": {"value": items}, "required": ["value"]} if wrapped else items
    indices = sorted(
        {
            int(k[len(item.name) + 1 :].split(".", 1)[0])
            for k in values
            if k.startswith(item.name + ".") and k[len(item.name) + 1 :].split(".", 1)[0].isdigit()
        }
    )
    minimum = int(prop.get("minItems", 0) or 0)
    if not indices:
        indices = list(range(max(minimum, 1)))
    elif len(indices) < minimum:
        start = indices[-1] + 1
        indices += list(range(start, start + minimum - len(indices)))
    item.rows = [
        build_fields(row_schema, item_ui, values, errors, f"{item.name}.{i}", f"{item.path}.{i}") for i in indices
    ]
    item.template = build_fields(row_schema, item_ui, {}, {}, f"{item.name}.{ROW_INDEX}", "")
    item.attrs = {"data-min-items": prop.get("minItems", 0), "data-max-items": prop.get("maxItems", "")}
    if wrapped:
        for row in [*item.rows, item.template]:
            for cell in row:
                cell.label = item.label


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def walk(fields: list[Field]):
    """Every field, nested ones (groups, rows and row templates) included."""
    for item in fields:
        yield item
        yield from walk(item.children)
        yield from walk(item.template)
        for row in item.rows:
            yield from walk(row)


def field_paths(fields: list[Field]) -> set[str]:
    """Every data path that has a field (errors for other paths are shown above the form)."""
    out: set[str] = set()
    for item in fields:
        out.add(item.path)
        out |= field_paths(item.children)
        for row in item.rows:
            out |= field_paths(row)
    return out
