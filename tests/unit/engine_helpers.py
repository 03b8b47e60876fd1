"""Helpers for engine tests: load fixture diagrams and drive instances with or without a JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

from engine.definition import load_definition, parse_form

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OPERATORS = {"notify", "publish", "http", "coi.assign"}


def load_fixture(name: str = "mini.bpmn", operators=OPERATORS):
    """Load a fixture diagram with every fixture form available."""
    forms = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}
    return load_definition((FIXTURES / name).read_bytes(), forms, operators)


def roundtrip(state: dict, through_json: bool) -> dict:
    """Hand the state on as it is, or through JSON text as the database would store it."""
    return json.loads(json.dumps(state)) if through_json else state
