"""Bag labels: the barcode decodes to the ISBT 128 COI data structure, the text is there for people, and the
patient reference is never on a label (the COI is)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from types import SimpleNamespace

import pypdf
import pypdfium2
import pytest
import zxingcpp

from engine.coi import issue_coi
from server.custody.labels import LABEL_SIZE, check_material_id, label_pdf
from server.errors import Invalid


def therapy(coi: str) -> SimpleNamespace:
    """What a label reads of a therapy."""
    return SimpleNamespace(
        coi=coi,
        patient_reference="PT-0042",
        site=SimpleNamespace(code="SITE-A"),
        definition=SimpleNamespace(name="Autologous CAR-T"),
    )


def decode(pdf: bytes) -> list[tuple[str, str]]:
    """Render the page as a 300 dpi image and read every barcode on it."""
    page = pypdfium2.PdfDocument(pdf)[0]
    image = page.render(scale=300 / 72).to_pil()
    return [(result.format.name, result.text) for result in zxingcpp.read_barcodes(image)]


def page_text(pdf: bytes) -> str:
    return " ".join(pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())


@pytest.mark.parametrize("number", [0, 1, 4242, 36**6 - 1])
def test_the_barcode_carries_the_data_identifier_and_the_fifteen_characters(number):
    coi = issue_coi("W1234", 2026, number)
    pdf = label_pdf(therapy(coi.value), "LEUKOPAK-1", datetime(2026, 11, 23, tzinfo=UTC))
    assert decode(pdf) == [("Code128", f"&/{coi.value}")]


def test_the_label_shows_the_eye_readable_coi_material_product_and_date_but_never_the_patient():
    coi = issue_coi("W1234", 2026, 77)
    pdf = label_pdf(therapy(coi.value), "BAG-2", datetime(2026, 11, 23, 14, 5, tzinfo=UTC), collected_at="2026-11-16")
    words = page_text(pdf)
    assert coi.eye_readable in words and coi.eye_readable.endswith(" " + coi.check)
    for expected in (
        "Material: BAG-2",
        "Product: Autologous CAR-T",
        "Date: 2026-11-23",
        "Collected: 2026-11-16",
        "Site: SITE-A",
    ):
        assert expected in words, (expected, words)
    assert "PT-0042" not in words and "Patient" not in words
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (round(LABEL_SIZE[0]), round(LABEL_SIZE[1]))


def test_a_long_product_name_still_fits_and_reads():
    coi = issue_coi("W1234", 2026, 5)
    subject = therapy(coi.value)
    subject.definition.name = "Autologous anti-CD19 CAR-T cell therapy, cryopreserved, single infusion bag"
    pdf = label_pdf(subject, "BAG-1", datetime(2026, 11, 23, tzinfo=UTC))
    assert decode(pdf) == [("Code128", f"&/{coi.value}")]
    assert "single infusion bag" in page_text(pdf)


@pytest.mark.parametrize("material_id", ["", "-bag", "bag 1", "bag/1", "x" * 101, "../etc"])
def test_material_ids_that_do_not_fit_a_label_are_refused(material_id):
    with pytest.raises(Invalid) as refused:
        check_material_id(material_id)
    assert refused.value.code == "invalid_material_id"


def test_ordinary_material_ids_pass():
    for material_id in ("BAG-1", "LEUKOPAK_2", "cryo.bag.3", "A" * 100):
        assert check_material_id(material_id) == material_id
