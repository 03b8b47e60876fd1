"""The human-readable therapy record: the JSON record of ``server.compliance.record`` laid out as an A4 PDF."""

from __future__ import annotations

import io
import json
import re
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

_STYLES = getSampleStyleSheet()
_BODY = ParagraphStyle("cell", parent=_STYLES["BodyText"], fontSize=7.5, leading=9)
_SMALL = ParagraphStyle("small", parent=_BODY, fontSize=6.5, leading=8, fontName="Courier")
_PADDING = 4  # a cell's left and right padding together, in points
# Cells given as plain text are set in the paragraphs' font and size, one line each.
_GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
        ("LEFTPADDING", (0, 0), (-1, -1), _PADDING / 2),
        ("RIGHTPADDING", (0, 0), (-1, -1), _PADDING / 2),
        ("FONT", (0, 0), (-1, -1), _BODY.fontName, _BODY.fontSize, _BODY.leading),
    ]
)
_HEADING = ParagraphStyle("section", parent=_STYLES["Heading2"], keepWithNext=1)
WIDTH = A4[0] - 30 * mm


def _when(value: str | None) -> str | None:
    """A timestamp to the second, for reading (the JSON record keeps the exact value)."""
    return re.sub(r"\.\d+Z$", "Z", value) if isinstance(value, str) else value


def _plain(value: Any) -> str:
    """A value as the record prints it: "-" for nothing, text as it is, anything else as JSON."""
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _text(value: Any, style: ParagraphStyle = _BODY) -> Paragraph:
    return Paragraph(escape(_plain(value)).replace("\n", "<br/>"), style)


def _cell(value: Any, width: float) -> str | Paragraph:
    """A table cell: text that fits its column on one line as it is (laid out at once), else a paragraph that
    wraps (laid out word by word, again for every page the table is split over)."""
    if isinstance(value, Paragraph):
        return value
    text = _plain(value)
    if "\n" not in text and stringWidth(text, _BODY.fontName, _BODY.fontSize) <= width - _PADDING:
        return text
    return _text(text)


def _halves(digest: str | None) -> str | None:
    """A SHA-256 digest in two lines of 32 characters: one line of 64 fits none of the columns that show one, and
    a word wider than its column is broken a character at a time (measuring each)."""
    return f"{digest[:32]}\n{digest[32:]}" if digest and len(digest) > 32 else digest


def _table(header: list[str], rows: list[list[Any]], widths: list[float]) -> LongTable | Paragraph:
    if not rows:
        return _text("None recorded.")
    columns = [w * WIDTH for w in widths]
    body = [[_text(h) for h in header]] + [[_cell(cell, columns[n]) for n, cell in enumerate(row)] for row in rows]
    table = LongTable(body, colWidths=columns, repeatRows=1)
    table.setStyle(_GRID)
    return table


def _pairs(pairs: list[tuple[str, Any]]) -> Table:
    table = Table([[_text(k), _text(v)] for k, v in pairs], colWidths=[0.28 * WIDTH, 0.72 * WIDTH])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _who(username: str | None, name: str | None) -> str:
    return f"{name} ({username})" if name and username else (username or "-")


def _patient(record: dict[str, Any]) -> str | None:
    """The patient reference, or why it is not shown (withheld from a reader who may not know it)."""
    if "patient_reference" in record["record"].get("withheld", []):
        return "withheld (need to know: the treatment and apheresis sites only)"
    return record["therapy"]["patient_reference"]


def record_pdf(record: dict[str, Any]) -> bytes:
    """Render the therapy record as PDF bytes."""
    therapy, v2v = record["therapy"], record["vein_to_vein"]
    buffer = io.BytesIO()
    title = f"Therapy record {therapy['coi_eye_readable']}"
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=title,
        author="Tether",
        subject="Complete therapy record with audit trail (21 CFR 11.10(b))",
    )

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(
            15 * mm,
            8 * mm,
            f"{title} - generated {record['record']['generated_at']} by {record['record']['generated_by']}",
        )
        canvas.drawRightString(A4[0] - 15 * mm, 8 * mm, f"page {doc.page}")
        canvas.restoreState()

    heading = _HEADING
    story: list = [Paragraph(escape(title), _STYLES["Title"])]
    story += [
        Paragraph("Identity", heading),
        _pairs(
            [
                ("COI (eye-readable)", therapy["coi_eye_readable"]),
                ("COI barcode content", therapy["coi_barcode"]),
                ("Therapy id", therapy["id"]),
                ("Patient reference", _patient(record)),
                (
                    "Process",
                    f"{therapy['process']['name']} ({therapy['process']['key']} v{therapy['process']['version']}, "
                    f"checksum {therapy['process']['checksum']})",
                ),
                (
                    "Calls",
                    ", ".join(
                        f"{call['key']} v{call['version']} ({call['activity_id']})"
                        for call in therapy["process"].get("calls") or []
                    )
                    or "none",
                ),
                ("Site", f"{therapy['site']['code']} - {therapy['site']['name']}"),
                (
                    "Parties",
                    ", ".join(f"{party} {code}" for party, code in (therapy.get("parties") or {}).items() if code),
                ),
                ("Status / stage", f"{therapy['status']} / {therapy['stage']}"),
                ("Started", f"{therapy['created_at']} by {therapy['created_by']}"),
                ("Ended", therapy["ended_at"]),
            ]
        ),
    ]
    story += [
        Paragraph("Vein to vein", heading),
        _pairs(
            [
                ("Collection", f"{v2v['collection_at'] or '-'} ({v2v['collection_source'] or 'not yet collected'})"),
                ("Infusion", v2v["infusion_at"] or "not yet infused"),
                ("Elapsed", f"{v2v['elapsed_days']} days" if v2v["elapsed_days"] is not None else "-"),
            ]
        ),
    ]
    if len(record["collections"]) > 0:
        story += [
            Paragraph("Collections (one COI)", heading),
            _table(
                ["#", "Material (DIN)", "Collected", "Recorded by", "Outcome"],
                [
                    [
                        c["number"],
                        c["material_id"] or "-",
                        c["collected_at"],
                        c["recorded_by"],
                        " ".join(
                            part
                            for part in (
                                c["outcome"] or "on its way",
                                c["outcome_at"] and f"at {c['outcome_at']}",
                                c["outcome_reason"] and f"({c['outcome_reason']})",
                            )
                            if part
                        ),
                    ]
                    for c in record["collections"]
                ],
                [0.06, 0.2, 0.22, 0.16, 0.36],
            ),
        ]
    story += [
        Paragraph("Steps", heading),
        _table(
            ["Seq", "When", "Step", "Who", "Activity"],
            [
                [
                    s["seq"],
                    _when(s["at"]),
                    f"{s['action']}: {s['name'] or ''}",
                    _who(s["actor"], s["actor_name"]),
                    s["activity_id"],
                ]
                for s in record["steps"]
            ],
            [0.06, 0.2, 0.36, 0.2, 0.18],
        ),
    ]
    story += [
        Paragraph("Tasks and recorded data", heading),
        _table(
            ["Task", "Role", "Ready / completed", "Completed by", "Data"],
            [
                [
                    t["name"],
                    t["role"],
                    f"{t['ready_at']} / {t['completed_at'] or t['status']}",
                    _who(t["completed_by"], t["completed_by_name"]),
                    _text(t["data"], _SMALL),
                ]
                for t in record["tasks"]
            ],
            [0.18, 0.1, 0.2, 0.16, 0.36],
        ),
    ]
    story += [
        Paragraph("Electronic signatures", heading),
        _table(
            ["Printed name", "Signer", "Meaning", "Signed at", "Step", "Bound to (SHA-256)"],
            [
                [
                    s["printed_name"],
                    s["signer"],
                    s["meaning"],
                    s["signed_at"],
                    s["step"] or s["task_id"],
                    _text(_halves(s["content_hash"]), _SMALL),
                ]
                for s in record["signatures"]
            ],
            [0.16, 0.12, 0.1, 0.18, 0.18, 0.26],
        ),
    ]
    custody = record["custody"]
    story += [
        Paragraph("Chain of custody", heading),
        _table(
            ["When", "Material", "From", "To", "Where", "Scanned label", "Recorded by"],
            [
                [
                    c["occurred_at"],
                    c["material_id"],
                    c["from_party"],
                    c["to_party"],
                    c["location"],
                    c["scanned_coi"],
                    c["recorded_by"],
                ]
                for c in custody["transfers"]
            ],
            [0.17, 0.12, 0.15, 0.15, 0.15, 0.14, 0.12],
        ),
    ]
    if custody["breaks"]:
        story.append(
            _text(
                "Gaps in the chain: "
                + "; ".join(
                    f"{b['material_id']} handed over by {b['from_party']}, last received by {b['expected_from']}"
                    for b in custody["breaks"]
                )
            )
        )
    summary = record["conditions"]["summary"]
    story += [
        Paragraph("Conditions", heading),
        _pairs(
            [
                ("Readings", f"{summary['count']} from {summary['first_at'] or '-'} to {summary['last_at'] or '-'}"),
                ("Lowest / highest", f"{summary['min_c']} / {summary['max_c']} °C"),
                ("Readings outside range", summary["excursions"]),
            ]
            + [
                (
                    f"  at {a['activity_id'] or 'no activity'}",
                    f"{a['count']} readings, {a['min_c']}..{a['max_c']} °C, {a['excursions']} outside range",
                )
                for a in summary["by_activity"]
            ]
        ),
    ]
    story += [
        Spacer(1, 2 * mm),
        _table(
            ["Excursion at", "Temperature", "Sensor", "Shipment", "Activity"],
            [
                [e["recorded_at"], f"{e['temperature_c']} °C", e["sensor_id"], e["shipment_id"], e["activity_id"]]
                for e in record["conditions"]["excursions"]
            ],
            [0.24, 0.14, 0.18, 0.18, 0.26],
        ),
    ]
    story += [
        Paragraph("Alerts", heading),
        _table(
            ["Raised", "Kind", "Severity", "Message", "Status"],
            [
                [
                    _when(a["raised_at"]),
                    a["kind"],
                    a["severity"],
                    a["message"],
                    f"{a['status']}" + (f" by {a['acknowledged_by']}: {a['note']}" if a["acknowledged_by"] else ""),
                ]
                for a in record["alerts"]
            ],
            [0.18, 0.14, 0.1, 0.4, 0.18],
        ),
    ]
    trail = record["audit"]
    story += [
        Paragraph("Audit trail", heading),
        _text(
            f"{trail['count']} entries (seq {trail['first_seq']}..{trail['last_seq']}); every entry's hash "
            f"recomputed: {'intact' if trail['entries_intact'] else 'NOT INTACT'}."
        ),
        Spacer(1, 2 * mm),
        _table(
            ["Seq", "At", "Actor", "Action", "Data and hash"],
            [
                [
                    e["seq"],
                    _when(e["at"]),
                    e["actor"],
                    e["action"] + (f" (reason: {e['reason']})" if e["reason"] else ""),
                    _text(
                        json.dumps(e["data"], ensure_ascii=False, sort_keys=True, default=str)
                        + f"\nhash {_halves(e['hash'])}",
                        _SMALL,
                    ),
                ]
                for e in trail["entries"]
            ],
            [0.06, 0.17, 0.12, 0.17, 0.48],
        ),
    ]
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
