"""Drawing a JSON Schema form as HTML fields and reading the submitted form back as JSON."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from server.web.form_data import friendly, parse_submission
from server.web.form_fields import build_fields

SCHEMA = {
    "type": "object",
    "required": ["volume_ml", "bags"],
    "properties": {
        "note": {"type": "string", "title": "Note"},
        "volume_ml": {"type": "number", "title": "Volume", "minimum": 0, "maximum": 2000},
        "collected_at": {"type": "string", "format": "date-time", "title": "Collected"},
        "ok": {"type": "boolean", "title": "OK"},
        "decision": {"type": "string", "oneOf": [{"const": "yes", "title": "Go"}, {"const": "no", "title": "Stop"}]},
        "bags": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["din"],
                "properties": {
                    "din": {"type": "string", "title": "DIN"},
                    "count": {"type": "integer", "title": "Count"},
                },
            },
        },
    },
}
UI = {
    "ui:order": ["bags", "*", "note"],
    "decision": {"ui:widget": "radio"},
    "ok": {"ui:widget": "radio"},
    "note": {"ui:widget": "textarea", "ui:help": "Anything unusual"},
}


def test_fields_follow_the_ui_order_with_widgets_units_and_rows():
    fields = build_fields(SCHEMA, UI, {}, {"bags.0.din": "This field is required."})
    assert [f.key for f in fields] == ["bags", "volume_ml", "collected_at", "ok", "decision", "note"]
    by_key = {f.key: f for f in fields}
    assert by_key["volume_ml"].kind == "number" and by_key["volume_ml"].unit == "mL"
    assert by_key["volume_ml"].attrs == {"step": "any", "min": 0, "max": 2000} and by_key["volume_ml"].required
    assert by_key["collected_at"].kind == "datetime"
    assert by_key["ok"].kind == "yesno" and by_key["decision"].kind == "radio"
    assert by_key["decision"].options == [("yes", "Go"), ("no", "Stop")]
    assert by_key["note"].kind == "textarea" and by_key["note"].help == "Anything unusual"
    bags = by_key["bags"]
    assert bags.kind == "table" and len(bags.rows) == 1
    assert [c.name for c in bags.rows[0]] == ["data.bags.0.din", "data.bags.0.count"]
    assert bags.rows[0][0].error == "This field is required." and bags.rows[0][0].required


def test_a_submitted_form_becomes_the_schemas_json():
    form = MultiDict(
        [
            ("data.volume_ml", "250.5"),
            ("data.collected_at", "2026-11-16T09:30"),
            ("data.ok", "false"),
            ("data.decision", "yes"),
            ("data.note", ""),
            ("data.bags.0.din", "G1234"),
            ("data.bags.0.count", "2"),
            ("data.bags.3.din", "G9999"),
            ("data.bags.5.din", ""),
        ]
    )
    data = parse_submission(SCHEMA, UI, form, tz_offset_minutes=-60)  # the browser is at UTC+01:00
    assert data == {
        "volume_ml": 250.5,
        "collected_at": "2026-11-16T08:30:00Z",
        "ok": False,
        "decision": "yes",
        "bags": [{"din": "G1234", "count": 2}, {"din": "G9999"}],
    }


def test_validation_messages_are_put_in_plain_words():
    assert friendly("'indication' is a required property") == "This field is required."
    assert friendly("60 is greater than the maximum of 50") == "Must be at most 50."
    assert friendly("True was expected") == "Tick this box to confirm."
