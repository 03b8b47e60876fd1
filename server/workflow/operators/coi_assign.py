"""`coi.assign`: returns the therapy's chain-of-identity identifier (assigned when the therapy started).

Parameters: none. Result: `{"coi": "CHW12342600A1B7", "coi_check": "C", "eye_readable": "CHW12342600A1B7 C"}`.
"""

from __future__ import annotations

from engine.coi import parse_coi

PARAMETERS: dict[str, str] = {}
REQUIRED: set[str] = set()


def run(context, params: dict) -> dict:
    """Return the therapy's COI in its three forms."""
    coi = parse_coi(context.therapy.coi)
    return {"coi": coi.value, "coi_check": coi.check, "eye_readable": coi.eye_readable}
