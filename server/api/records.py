"""Printable labels and the exportable therapy record (PDF for people, JSON for systems)."""

from __future__ import annotations

from flask import Response, g

from server.access.auth import require
from server.compliance import documents
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
    return _pdf(*documents.label_file(visible_therapy(g.user, therapy_id), material_id))


@bp.get("/therapies/<therapy_id>/record.json")
@require()
def therapy_record_json(therapy_id: str):
    """The complete therapy record, electronic form: identity, steps, signatures, custody, conditions, audit
    (the patient reference withheld from a caller who may not know it)."""
    return documents.record_json(visible_therapy(g.user, therapy_id), g.user)


@bp.get("/therapies/<therapy_id>/record.pdf")
@require()
def therapy_record_pdf(therapy_id: str):
    """The complete therapy record, human-readable form (PDF)."""
    return _pdf(*documents.record_file(visible_therapy(g.user, therapy_id), g.user))
