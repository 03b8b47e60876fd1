"""A therapy's documents from the browser: the record (PDF and JSON) and COI labels with the session cookie, one
click from the pages that talk about them; nobody else's."""

from __future__ import annotations

import re

from ..e2e.test_bundled_journeys import run_journey
from ..support.journeys import start, task
from ..support.pages import signed_in
from .test_web_network import _text


def test_the_record_and_labels_open_with_the_session(app, api, world):
    therapy = start(api, world["coord"])
    coordinator = signed_in(app, "coord")
    pdf = coordinator.get(f"/therapies/{therapy['id']}/record.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    record = coordinator.get(f"/therapies/{therapy['id']}/record.json")
    assert record.status_code == 200 and record.get_json()["therapy"]["coi"] == therapy["coi"]
    assert record.get_json()["therapy"]["patient_reference"] == "PT-1"
    label = coordinator.get(f"/therapies/{therapy['id']}/labels/BAG-2.pdf")
    assert label.status_code == 200 and label.data.startswith(b"%PDF")
    asked = coordinator.get(f"/therapies/{therapy['id']}/label?material_id=BAG-7")
    assert asked.status_code == 302 and asked.location.endswith(f"/therapies/{therapy['id']}/labels/BAG-7.pdf")
    bad = coordinator.get(f"/therapies/{therapy['id']}/labels/-bad.pdf")
    assert bad.status_code == 422 and "A material id has 1 to 100 letters" in bad.get_data(as_text=True)


def test_nobody_else_gets_them(app, api, world):
    therapy = start(api, world["coord"])
    other_centre = signed_in(app, "coordb")
    for path in ("record.pdf", "record.json", "labels/BAG-1.pdf"):
        assert other_centre.get(f"/therapies/{therapy['id']}/{path}").status_code == 404
        anonymous = app.test_client().get(f"/therapies/{therapy['id']}/{path}")
        assert anonymous.status_code == 302 and "/login" in anonymous.location
    maker = signed_in(app, "qa")  # sees the therapy, not the patient
    record = maker.get(f"/therapies/{therapy['id']}/record.json").get_json()
    assert record["therapy"]["patient_reference"] is None and record["record"]["withheld"] == ["patient_reference"]


def test_the_collection_task_prints_its_label_and_every_task_links_the_record(app, api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", [task("Task_Enrolment"), task("Task_Scheduling")])
    [collection] = [t for t in therapy["open_tasks"] if t["activity_id"] == "Task_Apheresis"]
    page = _text(signed_in(app, "coord"), f"/tasks/{collection['id']}")
    form = re.search(r'<form method="get" action="([^"]+)"[^>]*data-testid="print-label">', page)
    assert form and form.group(1) == f"/therapies/{therapy['id']}/label"
    assert 'name="material_id" value="BAG-1"' in page
    assert f'href="/therapies/{therapy["id"]}/record.pdf"' in page


def test_the_therapy_page_links_its_record_and_label(app, api, world):
    therapy = start(api, world["coord"])
    page = _text(signed_in(app, "coord"), f"/therapies/{therapy['id']}")
    documents = page[page.index('data-testid="documents"') :]
    documents = documents[: documents.index("</dd>")]
    for href in ("record.pdf", "record.json", "labels/BAG-1.pdf"):
        assert f'href="/therapies/{therapy["id"]}/{href}"' in documents
