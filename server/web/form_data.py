"""Turning a submitted HTML form back into the JSON a task's schema expects, and errors into friendly words.

Only the shape is handled here (text to numbers, booleans, local date-times to UTC, rows to arrays);
whether the data is valid is decided by the same server-side validation the API uses.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.datastructures import MultiDict

from .form_fields import kind_of, options_of


class FormShapeError(Exception):
    """Inputs that cannot be turned into the schema's types (a word in a number field), by data path."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("some inputs could not be read")
        self.errors = errors


def parse_submission(
    schema: dict, ui_schema: dict | None, form: MultiDict, tz_offset_minutes: int = 0
) -> dict[str, Any]:
    """The form's data as JSON for ``schema``; empty optional inputs are left out."""
    errors: dict[str, str] = {}
    data = _object(schema, ui_schema or {}, form, "data", "", tz_offset_minutes, errors)
    if errors:
        raise FormShapeError(errors)
    return data


def _object(schema: dict, ui_schema: dict, form: MultiDict, prefix: str, path: str, offset: int, errors: dict) -> dict:
    out: dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        name, sub = f"{prefix}.{key}", f"{path}.{key}" if path else key
        value = _value(key, prop, ui_schema.get(key) or {}, form, name, sub, offset, errors)
        if value is not None:
            out[key] = value
    return out


def _value(key: str, prop: dict, ui: dict, form: MultiDict, name: str, path: str, offset: int, errors: dict) -> Any:
    kind = kind_of(key, prop, ui)
    raw = form.get(name)
    if kind == "checkbox":
        return raw is not None
    if kind == "yesno":
        return {"true": True, "false": False}.get(raw or "")
    if kind in ("select", "radio"):
        if not raw:
            return None
        choices = {str(v) if not isinstance(v, bool) else str(v).lower(): v for v, _ in options_of(prop, ui)}
        return choices.get(raw, raw)
    if kind == "multi":
        choices = {str(v): v for v, _ in options_of(prop.get("items") or {}, {})}
        return [choices.get(v, v) for v in form.getlist(name)] or None
    if kind == "group":
        nested = _object(prop, ui, form, name, path, offset, errors)
        return nested or None
    if kind == "table":
        return _rows(prop, ui.get("items") or {}, form, name, path, offset, errors)
    if raw is None:
        return None
    text = raw.strip()
    if text == "":
        return None
    if kind in ("number", "integer"):
        return _number(text, kind == "integer", path, errors)
    if kind == "datetime":
        return local_to_utc(text, offset, path, errors)
    return text if kind in ("scan", "slot", "date", "time", "email", "url") else raw.rstrip()


def _rows(prop: dict, item_ui: dict, form: MultiDict, name: str, path: str, offset: int, errors: dict) -> list | None:
    items = prop.get("items") or {}
    wrapped = items.get("type") != "object"
    row_schema = {"type": "object", "properties": {"value": items}} if wrapped else items
    indices = sorted(
        {
            int(k[len(name) + 1 :].split(".", 1)[0])
            for k in form
            if k.startswith(name + ".") and k[len(name) + 1 :].split(".", 1)[0].isdigit()
        }
    )
    rows: list[Any] = []
    for index in indices:
        row = _object(row_schema, item_ui, form, f"{name}.{index}", f"{path}.{len(rows)}", offset, errors)
        if wrapped:
            if "value" in row:
                rows.append(row["value"])
        elif any(v not in (None, False, "") for v in row.values()):
            rows.append(row)
    return rows or None


def _number(text: str, integer: bool, path: str, errors: dict) -> Any:
    try:
        if integer:
            return int(text)
        number = float(text.replace(",", "."))
    except ValueError:
        errors[path] = "Enter a whole number." if integer else "Enter a number."
        return None
    if number.is_integer() and "." not in text and "e" not in text.lower():
        return int(number)
    return number


def local_to_utc(text: str, offset_minutes: int, path: str, errors: dict) -> str | None:
    """A ``datetime-local`` value typed in the browser's zone (JavaScript's offset) as ISO 8601 UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        errors[path] = "Enter a date and time."
        return None
    if moment.tzinfo is None:
        moment = (moment + timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_to_local(value: str, offset_minutes: int) -> str:
    """An ISO 8601 date-time as the ``datetime-local`` text of the browser's zone."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return value or ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None) - timedelta(minutes=offset_minutes)
    return moment.strftime("%Y-%m-%dT%H:%M")


_FRIENDLY = [
    (re.compile(r"is a required property$"), lambda m: "This field is required."),
    (re.compile(r"^True was expected$"), lambda m: "Tick this box to confirm."),
    (re.compile(r"^False was expected$"), lambda m: "Leave this box unticked."),
    (re.compile(r"is less than the minimum of (\S+)$"), lambda m: f"Must be at least {m.group(1)}."),
    (re.compile(r"is greater than the maximum of (\S+)$"), lambda m: f"Must be at most {m.group(1)}."),
    (re.compile(r"is less than or equal to the minimum of (\S+)$"), lambda m: f"Must be more than {m.group(1)}."),
    (re.compile(r"is greater than or equal to the maximum of (\S+)$"), lambda m: f"Must be less than {m.group(1)}."),
    (re.compile(r"should be non-empty$|is too short$"), lambda m: "This is too short."),
    (re.compile(r"is too long$|is expected to be empty$"), lambda m: "This is too long."),
    (
        re.compile(r"is not a '(date-time|date|time)'$"),
        lambda m: {"date": "Enter a valid date.", "time": "Enter a valid time."}.get(
            m.group(1), "Enter a valid date and time."
        ),
    ),
    (
        re.compile(r"is not one of |is not valid under any of the given schemas$"),
        lambda m: "Choose one of the options.",
    ),
    (re.compile(r"does not match "), lambda m: "This does not have the expected format."),
    (re.compile(r"is not of type '(number|integer)'$"), lambda m: "Enter a number."),
]


def friendly(message: str) -> str:
    """A validation message in words a person at a hospital desk understands."""
    for pattern, make in _FRIENDLY:
        found = pattern.search(message or "")
        if found:
            return make(found)
    return message
