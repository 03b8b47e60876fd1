"""Printable bag labels: the COI as a Code 128 barcode (``&/`` + 15 characters) and in eye-readable form.

A label is one PDF page of 100 x 60 mm (a common thermal-printer bag label) with the barcode, the
eye-readable COI with its check character, the material id, the product, the site and the date. A label
carries the COI, never the patient reference: whoever handles the bag (manufacturing, couriers) need not know
the patient, and the COI is what ties the bag to them.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from engine.coi import parse_coi
from server.errors import Invalid
from server.store.models import Therapy

LABEL_SIZE = (100 * mm, 60 * mm)
MARGIN = 4 * mm
MATERIAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_material_id(material_id: str) -> str:
    """A material id fit for a label and a URL: letters, digits, '.', '_' and '-', at most 100 characters."""
    if not MATERIAL_ID.fullmatch(material_id or ""):
        raise Invalid(
            "A material id has 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            code="invalid_material_id",
            details={"field": "material_id"},
        )
    return material_id


def barcode_for(therapy: Therapy) -> Code128:
    """The label's barcode: Code 128 of the ISBT 128 COI data structure ``&/`` + 15 characters."""
    return Code128(
        parse_coi(therapy.coi).barcode,
        barHeight=13 * mm,
        barWidth=0.3 * mm,
        quiet=True,
        lquiet=3 * mm,
        rquiet=3 * mm,
        humanReadable=False,
    )


def _fit(canvas: Canvas, text: str, font: str, size: float, width: float) -> float:
    """The largest font size up to ``size`` at which ``text`` fits in ``width``."""
    while size > 5 and canvas.stringWidth(text, font, size) > width:
        size -= 0.5
    return size


def label_pdf(
    therapy: Therapy,
    material_id: str,
    printed_at: datetime,
    *,
    product: str | None = None,
    collected_at: str | None = None,
) -> bytes:
    """One label page as PDF bytes."""
    coi = parse_coi(therapy.coi)
    product = product or therapy.definition.name
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=LABEL_SIZE)
    canvas.setTitle(f"Label {coi.eye_readable} {material_id}")
    canvas.setSubject("Chain of identity label (ISBT 128 Data Structure 040)")
    canvas.setCreator("Tether")
    width, height = LABEL_SIZE
    usable = width - 2 * MARGIN
    barcode = barcode_for(therapy)
    barcode.drawOn(canvas, MARGIN + (usable - barcode.width) / 2, height - MARGIN - barcode.barHeight)
    y = height - MARGIN - barcode.barHeight - 6 * mm
    size = _fit(canvas, coi.eye_readable, "Courier-Bold", 16, usable)
    canvas.setFont("Courier-Bold", size)
    canvas.drawCentredString(width / 2, y, coi.eye_readable)
    canvas.setFont("Helvetica", 6.5)
    canvas.drawCentredString(width / 2, y - 3.2 * mm, "Chain of identity (COI) with check character")
    lines = [
        ("Material", material_id),
        ("Product", product),
        ("Site", therapy.site.code),
        ("Date", printed_at.strftime("%Y-%m-%d")),
    ]
    if collected_at:
        lines.insert(3, ("Collected", collected_at))
    y -= 8 * mm
    for caption, value in lines:
        canvas.setFont("Helvetica-Bold", 8)
        canvas.drawString(MARGIN, y, f"{caption}:")
        font_size = _fit(canvas, value, "Helvetica", 8, usable - 22 * mm)
        canvas.setFont("Helvetica", font_size)
        canvas.drawString(MARGIN + 22 * mm, y, value)
        y -= 3.6 * mm
    canvas.rect(1.5 * mm, 1.5 * mm, width - 3 * mm, height - 3 * mm, stroke=1, fill=0)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
