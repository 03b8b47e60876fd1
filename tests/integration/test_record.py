"""The therapy record (JSON and PDF), labels and vein-to-vein times through the REST API."""

from __future__ import annotations

import io

import pypdf
import pypdfium2
import pytest
import zxingcpp

from engine.coi import parse_coi
from server.config import project_root

from ..scenario_data import form_data
from .conftest import PASSWORD
from .test_custody_conditions import reading, start, to_receipt, transfer


def pdf_words(content: bytes) -> str:
    """All the text of a PDF, whitespace collapsed."""
    reader = pypdf.PdfReader(io.BytesIO(content))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


@pytest.fixture
def story(api, world, clock):
    """A mini therapy with a custody chain, an excursion, a refused wrong-bag scan and a signed receipt."""
    therapy, other = start(api, world, "PT-0001"), start(api, world, "PT-0002")
    coi = therapy["coi"]
    assert (
        transfer(
            api,
            world["coord"],
            therapy,
            "&/" + coi,
            material_id="BAG-1",
            from_party="SITE-A apheresis",
            to_party="ColdChain courier",
        ).status_code
        == 201
    )
    task = to_receipt(api, world, therapy)
    url = f"/api/v1/therapies/{therapy['id']}/conditions"
    assert api.as_(world["logistics"]).post(url, json=reading(5.0)).get_json()["excursion"] is False
    warm = api.as_(world["logistics"]).post(url, json=reading(11.5, at="2026-11-23T08:50:00Z")).get_json()
    assert warm["excursion"] is True
    assert (
        transfer(
            api,
            world["logistics"],
            therapy,
            coi,
            material_id="BAG-1",
            from_party="ColdChain courier",
            to_party="MFG-1 goods-in",
            location="MFG-1 dock",
        ).status_code
        == 201
    )
    complete = f"/api/v1/tasks/{task['id']}/complete"
    wrong = api.as_(world["logistics"]).post(
        complete,
        json={
            "data": {"received_ok": True, "scanned_coi": "&/" + other["coi"]},
            "signature": {"password": PASSWORD, "meaning": "approval"},
        },
    )
    assert wrong.status_code == 409
    right = api.as_(world["logistics"]).post(
        complete,
        json={
            "data": {"received_ok": True, "scanned_coi": parse_coi(coi).eye_readable},
            "signature": {"password": PASSWORD, "meaning": "approval"},
        },
    )
    assert right.status_code == 200, right.get_json()
    return {"therapy": therapy, "other": other, "task": task, "excursion_alert": warm["alert_id"]}


def test_record_json_holds_the_whole_story(api, world, story):
    therapy = story["therapy"]
    response = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}/record.json")
    assert response.status_code == 200
    record = response.get_json()
    identity = record["therapy"]
    assert identity["coi"] == therapy["coi"] and identity["coi_eye_readable"] == parse_coi(therapy["coi"]).eye_readable
    assert identity["coi_barcode"] == "&/" + therapy["coi"] and identity["patient_reference"] == "PT-0001"
    assert identity["process"]["key"] == "mini_therapy" and identity["site"]["code"] == "SITE-A"
    assert record["record"]["generated_by"] == "auditor"

    steps = record["steps"]
    enrol = next(s for s in steps if s["action"] == "task.completed" and s["activity_id"] == "Task_Enrol")
    assert enrol["actor"] == "coord" and enrol["actor_name"] == "Coord Person" and enrol["at"]
    assert enrol["data"] == {"eligible": True, "patient_initials": "AB"}
    receipt = next(s for s in steps if s["action"] == "task.completed" and s["activity_id"] == "Task_Receive")
    assert receipt["actor"] == "logistics" and receipt["completed_at"]
    assert any(s["action"] == "message.received" and s["actor"] == "integrator" for s in steps)

    [signature] = record["signatures"]
    assert signature["printed_name"] == "Logistics Person" and signature["meaning"] == "approval"
    assert signature["signed_at"] and signature["signer"] == "logistics" and signature["step"] == "Receive shipment"

    transfers = record["custody"]["transfers"]
    assert [(t["from_party"], t["to_party"]) for t in transfers] == [
        ("SITE-A apheresis", "ColdChain courier"),
        ("ColdChain courier", "MFG-1 goods-in"),
    ]
    assert record["custody"]["breaks"] == []

    conditions = record["conditions"]
    assert conditions["summary"]["count"] == 2 and conditions["summary"]["excursions"] == 1
    assert conditions["summary"]["max_c"] == 11.5
    assert [e["temperature_c"] for e in conditions["excursions"]] == [11.5]

    kinds = {a["kind"]: a for a in record["alerts"]}
    assert {"coi_mismatch", "condition_excursion"} <= set(kinds)
    assert [a["kind"] for a in record["alerts"]].count("coi_mismatch") == 1
    assert kinds["condition_excursion"]["id"] == story["excursion_alert"]
    assert kinds["coi_mismatch"]["data"]["scanned"] == "&/" + story["other"]["coi"]

    trail = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()["items"]
    assert [e["seq"] for e in record["audit"]["entries"]] == [e["seq"] for e in trail]
    assert [e["hash"] for e in record["audit"]["entries"]] == [e["hash"] for e in trail]
    assert record["audit"]["entries_intact"] is True and record["audit"]["count"] == len(trail)
    actions = {e["action"] for e in record["audit"]["entries"]}
    assert {"custody.transferred", "coi.mismatch", "condition.excursion", "alert.raised", "task.completed"} <= actions


def test_record_pdf_reads_the_same_story(api, world, story):
    therapy = story["therapy"]
    response = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    words = pdf_words(response.data)
    record = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_json()
    for expected in (
        parse_coi(therapy["coi"]).eye_readable,
        "&/" + therapy["coi"],
        "PT-0001",
        "Mini therapy",
        "Electronic signatures",
        "Logistics Person",
        "approval",
        "Chain of custody",
        "SITE-A apheresis",
        "MFG-1 goods-in",
        "MFG-1 dock",
        "11.5 °C",
        "coi_mismatch",
        "condition_excursion",
        "Coord Person (coord)",
        "Audit trail",
        "custody.transferred",
        "coi.mismatch",
        f"{record['audit']['count']} entries",
        "intact",
    ):
        assert expected in words, expected
    for entry in record["audit"]["entries"]:
        assert entry["action"] in words
        # each entry's hash, in two lines of 32 characters
        assert f"hash {entry['hash'][:32]} {entry['hash'][32:]}" in words, entry["seq"]
    for signature in record["signatures"]:
        assert f"{signature['content_hash'][:32]} {signature['content_hash'][32:]}" in words


def test_record_and_labels_are_scoped_to_sites(api, world, story):
    therapy = story["therapy"]
    for path in ("record.json", "record.pdf", "labels/BAG-1.pdf"):
        assert api.as_(world["coordb"]).get(f"/api/v1/therapies/{therapy['id']}/{path}").status_code == 404
        assert api.get(f"/api/v1/therapies/{therapy['id']}/{path}").status_code == 401
    assert api.as_(world["coord"]).get("/api/v1/therapies/nope/record.json").status_code == 404


def test_label_endpoint_prints_a_scannable_label(api, world, clock):
    therapy = start(api, world)
    response = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/labels/LEUKOPAK-1.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    image = pypdfium2.PdfDocument(response.data)[0].render(scale=300 / 72).to_pil()
    assert [r.text for r in zxingcpp.read_barcodes(image)] == ["&/" + therapy["coi"]]
    words = pdf_words(response.data)
    assert parse_coi(therapy["coi"]).eye_readable in words and "LEUKOPAK-1" in words
    assert "Mini therapy" in words and "2026-11-23" in words
    bad = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/labels/bag%201.pdf")
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_material_id"


def test_vein_to_vein_runs_from_collection_and_stops_at_infusion(api, world, clock):
    from server.workflow.definitions import deploy_bundled

    with api.client.application.app_context():
        deploy_bundled(project_root() / "processes")
    coord = api.as_(world["coord"])
    therapy = coord.post(
        "/api/v1/therapies",
        json={"process_key": "autologous_car_t", "site": "SITE-A", "patient": {"reference": "PT-7"}},
    ).get_json()
    detail = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["vein_to_vein"]["collection_at"] is None and detail["vein_to_vein"]["elapsed_seconds"] is None
    for activity in ("Task_Enrolment", "Task_Scheduling", "Task_Apheresis"):
        task = next(
            t
            for t in coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()["open_tasks"]
            if t["activity_id"] == activity
        )
        data = form_data(task["form"]["name"], therapy["coi"])
        if activity == "Task_Apheresis":
            data["collection_completed_at"] = "2026-11-22T09:00:00Z"
        assert coord.post(f"/api/v1/tasks/{task['id']}/complete", json={"data": data}).status_code == 200
    clock.advance(hours=3)
    v2v = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()["vein_to_vein"]
    assert v2v["collection_at"] == "2026-11-22T09:00:00Z" and v2v["infusion_at"] is None
    assert v2v["elapsed_seconds"] == 27 * 3600 and v2v["infused"] is False
    assert v2v["stage"] == "Waiting: Courier picked up fresh material"
