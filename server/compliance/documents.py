"""The therapy's documents as files: the record (PDF for people, JSON for systems) and a material's label.

The API (bearer tokens) and the web pages (the session) serve the same files from here, so that every document a
page talks about is one click away and reads exactly as the API gives it.
"""

from __future__ import annotations

from typing import Any

from server.clock import clock
from server.compliance.record import collections_of, therapy_record, vein_to_vein
from server.compliance.record_pdf import record_pdf
from server.custody.labels import check_material_id, label_pdf
from server.store.models import Therapy, User


def record_json(therapy: Therapy, reader: User) -> dict[str, Any]:
    """The complete record as ``reader`` may read it (``compliance.record.therapy_record``)."""
    return therapy_record(therapy, reader)


def record_file(therapy: Therapy, reader: User) -> tuple[bytes, str]:
    """The complete record as a PDF, and its file name."""
    return record_pdf(therapy_record(therapy, reader)), f"therapy-record-{therapy.coi}.pdf"


def label_file(therapy: Therapy, material_id: str) -> tuple[bytes, str]:
    """A printable label for one material, and its file name: the COI as a Code 128 barcode and eye-readable,
    the product and the date that material was collected (a collection's DIN), else the latest collection's.
    422 for a material id unfit for a label."""
    check_material_id(material_id)
    collected = next((c["collected_at"] for c in collections_of(therapy) if c["material_id"] == material_id), None)
    collected = collected or vein_to_vein(therapy)["collection_at"]
    content = label_pdf(therapy, material_id, clock()(), collected_at=collected[:10] if collected else None)
    return content, f"label-{therapy.coi}-{material_id}.pdf"
