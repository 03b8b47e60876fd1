"""A therapy's documents from the browser, with the session: its record (PDF and JSON) and material labels.

The same files as the API's (``server.compliance.documents``), for anyone who may see the therapy; the
patient reference withheld as there.
"""

from __future__ import annotations

from flask import Response, jsonify, redirect, request, url_for

from server.compliance import documents
from server.errors import ApiError

from . import bp
from .session import login_required, page_user
from .therapy_pages import refusal, visible_therapy


def _file(content: bytes, filename: str, mimetype: str = "application/pdf") -> Response:
    response = Response(content, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/therapies/<therapy_id>/record.pdf")
@login_required()
def record_pdf(therapy_id: str):
    """The complete therapy record as a PDF (21 CFR 11.10(b)'s human-readable copy)."""
    return _file(*documents.record_file(visible_therapy(therapy_id), page_user()))


@bp.get("/therapies/<therapy_id>/record.json")
@login_required()
def record_json(therapy_id: str):
    """The complete therapy record as JSON (the electronic copy)."""
    response = jsonify(documents.record_json(visible_therapy(therapy_id), page_user()))
    response.headers["Content-Disposition"] = f'attachment; filename="therapy-record-{therapy_id}.json"'
    return response


@bp.get("/therapies/<therapy_id>/labels/<material_id>.pdf")
@login_required()
def label_pdf(therapy_id: str, material_id: str):
    """A printable COI label for one material (a bag, by its number or DIN)."""
    therapy = visible_therapy(therapy_id)
    try:
        return _file(*documents.label_file(therapy, material_id))
    except ApiError as exc:
        return Response(refusal(exc), status=exc.status, mimetype="text/plain")


@bp.get("/therapies/<therapy_id>/label")
@login_required()
def label_for(therapy_id: str):
    """The label form's target: ``?material_id=`` to that material's label."""
    therapy = visible_therapy(therapy_id)
    material = (request.args.get("material_id") or "").strip() or "BAG-1"
    return redirect(url_for("web.label_pdf", therapy_id=therapy.id, material_id=material))
