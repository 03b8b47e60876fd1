"""Valid form data for every bundled form, and the journeys through the bundled diagrams.

The demo seeds therapies with the same data, so it lives in the server package; tests import it here."""

from __future__ import annotations

import json
from pathlib import Path

from engine.simulation import example_of

COI = "CHW12342600A1B7"


def _examples() -> dict[str, dict]:
    """The first example of every bundled form schema: valid data a person might enter."""
    folder = Path(__file__).resolve().parent.parent / "forms"
    out = {}
    for path in sorted(folder.glob("*.schema.json")):
        example = example_of(json.loads(path.read_text()))
        if example:
            out[path.name] = example
    return out


FORM_DATA = _examples()


def form_data(form: str, coi: str = COI) -> dict:
    """Valid data for ``form``, with its scans set to ``coi`` (barcode or eye-readable, as the form has it)."""
    data = dict(FORM_DATA[form])
    if "scanned_coi" in data:
        data["scanned_coi"] = data["scanned_coi"].replace(COI, coi)
        if data["scanned_coi"].endswith(" C"):
            from engine.coi import parse_coi

            data["scanned_coi"] = parse_coi(coi).eye_readable
    return data


# The autologous happy path: user tasks (by activity id), messages (name, payload) and clock moves.
AUTOLOGOUS_HAPPY_PATH = [
    ("task", "Task_Enrolment"),
    ("task", "Task_Scheduling"),
    ("task", "Task_Apheresis"),
    ("message", "courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"}),
    ("message", "shipment.delivered", {"delivered_to": "MFG-1"}),
    ("task", "Task_ReceiveAtManufacturing"),
    ("message", "mes.manufacturing_started", {"batch": "B-26-0413"}),
    ("message", "mes.manufacturing_completed", {"batch": "B-26-0413"}),
    ("message", "qc.results", {"result": "pass", "report": "QC-0413"}),
    ("task", "Task_QaRelease"),
    ("message", "return.picked_up", {"courier": "ColdChain"}),
    ("message", "return.delivered", {"delivered_to": "SITE-A"}),
    ("task", "Task_ReceiveAtCentre"),
    ("task", "Task_ConfirmAvailability"),
    ("task", "Task_StartLymphodepletion"),
    ("task", "Task_BedsideCheck"),
    ("task", "Task_RecordInfusion"),
    ("advance", {"days": 29}),
    ("task", "Task_Day28FollowUp"),
]


def with_slots(journey: list, apheresis_slot_id: str, manufacturing_slot_id: str) -> list:
    """``journey`` with its scheduling task naming the apheresis and manufacturing slots it books."""
    slots = {"apheresis_slot_id": apheresis_slot_id, "manufacturing_slot_id": manufacturing_slot_id}
    return [(*step[:2], slots) if step[:2] == ("task", "Task_Scheduling") else step for step in journey]


ALLOGENEIC_HAPPY_PATH = [
    ("task", "Task_OrderFromInventory"),
    ("task", "Task_AllocateLot"),
    ("message", "shipment.picked_up", {"courier": "ColdChain"}),
    ("message", "shipment.delivered", {"delivered_to": "SITE-A"}),
    ("task", "Task_ReceiveAtSite"),
    ("task", "Task_BedsideCheck"),
    ("task", "Task_RecordInfusion"),
]
