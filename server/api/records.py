"""Printable labels and the exportable therapy record (PDF for people, JSON for systems)."""

from __future__ import annotations

from flask import Response, g

from server.access.auth import require
from server.compliance.record import therapy_record, vein_to_vein
from server.compliance.record_pdf import record_pdf
from server.custody.labels import check_material_id, label_pdf
from server.usecases.checks import visible_therapy

from . import bp


def _pdf(content: bytes, filename: str) -> Response:
    response = Response(content, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/therapies/<therapy_id>/labels/<material_id>.pdf")
@require()
def therapy_label(therapy_id: str, material_id: str):
    """A printable label for one material: the COI as a Code 128 barcode and eye-readable, product and date."""
    from server.clock import clock

    therapy = visible_therapy(g.user, therapy_id)
    check_material_id(material_id)
    collected = vein_to_vein(therapy)["collection_at"]
    content = label_pdf(therapy, material_id, clock()(), collected_at=collected[:10] if collected else None)
    return _pdf(content, f"label-{therapy.coi}-{material_id}.pdf")


@bp.get("/therapies/<therapy_id>/record.json")
@require()
def therapy_record_json(therapy_id: str):
    """The complete therapy record, electronic form: identity, steps, signatures, custody, conditions, audit
    (the patient reference withheld from a caller who may not know it)."""
    therapy = visible_therapy(g.user, therapy_id)
    return therapy_record(therapy, g.user)


@bp.get("/therapies/<therapy_id>/record.pdf")
@require()
def therapy_record_pdf(therapy_id: str):
    """The complete therapy record, human-readable form (PDF)."""
    therapy = visible_therapy(g.user, therapy_id)
    return _pdf(record_pdf(therapy_record(therapy, g.user)), f"therapy-record-{therapy.coi}.pdf")
