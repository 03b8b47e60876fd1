"""The bundled autologous journey with every handoff scanned and recorded, a monitored cold chain with one
excursion, one wrong bag caught at receipt, and the complete record read back as JSON and as PDF."""

from __future__ import annotations

import io
from datetime import timedelta

import pypdf
import pypdfium2
import pytest
import zxingcpp

from engine.coi import parse_coi
from server.config import project_root

from ..integration.conftest import PASSWORD
from ..scenario_data import form_data

ROLE_USER = {"coordinator": "coord", "manufacturing": "mfg", "qa": "qa", "logistics": "logistics"}


@pytest.fixture
def deployed(app, world):
    """The bundled processes, deployed as the server deploys them at start."""
    from server.workflow.definitions import deploy_bundled

    with app.app_context():
        deploy_bundled(project_root() / "processes")


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Journey:
    """Drives one therapy through the API as the people and systems around it would."""

    def __init__(self, api, world, clock, reference: str):
        self.api, self.world, self.clock = api, world, clock
        started = api.as_(world["coord"]).post(
            "/api/v1/therapies",
            json={
                "process_key": "autologous_car_t",
                "site": "SITE-A",
                "patient": {"reference": reference},
                "parties": {"manufacturing": "MFG-1"},
            },
        )
        assert started.status_code == 201, started.get_json()
        self.therapy = started.get_json()
        self.id, self.coi = self.therapy["id"], self.therapy["coi"]
        self.url = f"/api/v1/therapies/{self.id}"

    def detail(self) -> dict:
        return self.api.as_(self.world["coord"]).get(self.url).get_json()

    def task(self, activity_id: str) -> dict:
        ready = self.detail()["open_tasks"]
        found = next((t for t in ready if t["activity_id"] == activity_id), None)
        assert found is not None, f"{activity_id} not ready; open: {[t['activity_id'] for t in ready]}"
        return found

    def complete(self, activity_id: str, **overrides):
        """Complete the ready task with valid form data (its label scan set to this therapy's COI)."""
        self.clock.advance(minutes=20)
        task = self.task(activity_id)
        body = {"data": {**form_data(task["form"]["name"], self.coi), **overrides}}
        if task["signature"]:
            body["signature"] = {"password": PASSWORD, "meaning": task["signature"]["meaning"]}
        response = self.api.as_(self.world[ROLE_USER[task["role"]]]).post(
            f"/api/v1/tasks/{task['id']}/complete", json=body
        )
        assert response.status_code == 200, (activity_id, response.get_json())
        return response

    def message(self, name: str, payload: dict | None = None):
        self.clock.advance(minutes=30)
        sent = self.api.as_(self.world["integrator"]).post(
            "/api/v1/messages", json={"name": name, "coi": self.coi, "payload": payload or {}}
        )
        assert sent.status_code == 200, (name, sent.get_json())

    def handoff(self, who: str, material_id: str, from_party: str, to_party: str, location: str, scanned: str):
        """Scan the bag and record the transfer of custody."""
        self.clock.advance(minutes=10)
        made = self.api.as_(self.world[who]).post(
            f"{self.url}/custody",
            json={
                "material_id": material_id,
                "from_party": from_party,
                "to_party": to_party,
                "location": location,
                "scanned_coi": scanned,
            },
        )
        assert made.status_code == 201, made.get_json()
        return made.get_json()

    def log_temperatures(self, temperatures: list[float], shipment_id: str) -> dict:
        """A data logger uploads one reading a minute for the last len(temperatures) minutes."""
        first = self.clock() - timedelta(minutes=len(temperatures))
        readings = [
            {
                "sensor_id": f"LOGGER-{shipment_id}",
                "shipment_id": shipment_id,
                "temperature_c": t,
                "recorded_at": iso(first + timedelta(minutes=i)),
            }
            for i, t in enumerate(temperatures)
        ]
        posted = self.api.as_(self.world["integrator"]).post(f"{self.url}/conditions", json={"readings": readings})
        assert posted.status_code == 201, posted.get_json()
        return posted.get_json()


def pdf_words(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def test_bundled_journey_with_custody_conditions_and_scans_makes_a_complete_record(api, world, clock, deployed):
    journey = Journey(api, world, clock, "PT-42")
    other = Journey(api, world, clock, "PT-43")
    eye_readable = parse_coi(journey.coi).eye_readable

    # Collection: the bag is labelled; the label's barcode carries the COI.
    journey.complete("Task_Enrolment")
    journey.complete("Task_Scheduling")
    collected_at = clock() + timedelta(minutes=15)
    journey.complete("Task_Apheresis", collection_completed_at=iso(collected_at))
    label = api.as_(world["coord"]).get(f"{journey.url}/labels/LEUKOPAK-1.pdf")
    image = pypdfium2.PdfDocument(label.data)[0].render(scale=300 / 72).to_pil()
    assert [r.text for r in zxingcpp.read_barcodes(image)] == ["&/" + journey.coi]

    # Fresh leg at 2-8 °C, every handoff scanned.
    journey.handoff(
        "logistics", "LEUKOPAK-1", "SITE-A apheresis unit", "ColdChain courier", "SITE-A dock", "&/" + journey.coi
    )
    journey.message("courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"})
    clock.advance(hours=6)
    fresh = journey.log_temperatures([4.0 + (i % 5) * 0.5 for i in range(360)], "CC-1")
    assert fresh["excursion"] is False and fresh["range"] == [2.0, 8.0] and fresh["recorded"] == 360
    journey.handoff("mfg", "LEUKOPAK-1", "ColdChain courier", "MFG-1 goods-in", "MFG-1 dock", journey.coi)
    journey.message("shipment.delivered", {"delivered_to": "MFG-1"})

    # Receipt at manufacturing: the wrong bag is blocked and alerted, the right one accepted.
    receipt = journey.task("Task_ReceiveAtManufacturing")
    wrong_bag = api.as_(world["mfg"]).post(
        f"/api/v1/tasks/{receipt['id']}/complete", json={"data": form_data(receipt["form"]["name"], other.coi)}
    )
    assert wrong_bag.status_code == 409 and wrong_bag.get_json()["error"]["code"] == "coi_mismatch"
    mismatch_alert = wrong_bag.get_json()["error"]["details"]["alert_id"]
    assert journey.task("Task_ReceiveAtManufacturing")["id"] == receipt["id"]
    journey.complete("Task_ReceiveAtManufacturing")

    journey.message("mes.manufacturing_started", {"batch": "B-26-0413"})
    clock.advance(days=14)
    journey.message("mes.manufacturing_completed", {"batch": "B-26-0413"})
    journey.message("qc.results", {"result": "pass", "report": "QC-0413"})
    journey.complete("Task_QaRelease")

    # Cryopreserved return leg: one reading above -150 °C is an excursion, and the process branches.
    journey.handoff("integrator", "CAR-T-1", "MFG-1 release", "ColdChain courier", "MFG-1 dock", journey.coi)
    journey.message("return.picked_up", {"courier": "ColdChain"})
    clock.advance(hours=2)
    series = [-182.0] * 120
    series[70] = -141.5
    cold = journey.log_temperatures(series, "CC-2")
    assert cold["excursion"] is True and cold["range"] == [-196.0, -150.0] and cold["excursions"] == 1
    assert cold["delivered"] is True and cold["alert_id"]
    assert journey.detail()["current_activities"] == ["Task_AwaitQuarantinedDelivery"]
    journey.handoff("logistics", "CAR-T-1", "ColdChain courier", "SITE-A cell therapy lab", "SITE-A lab", eye_readable)
    journey.message("return.delivered", {"delivered_to": "SITE-A"})
    journey.complete("Task_QuarantineProduct")
    journey.complete(
        "Task_ExcursionAssessment",
        excursion_disposition="use",
        excursion_impact_assessment="One reading at -141.5 C for under a minute; within the budget.",
    )
    journey.complete("Task_ReceiveAtCentre")
    journey.complete("Task_ConfirmAvailability")
    journey.complete("Task_StartLymphodepletion")
    journey.handoff("coord", "CAR-T-1", "SITE-A cell therapy lab", "SITE-A infusion ward", "Ward 3", "&/" + journey.coi)
    journey.complete("Task_BedsideCheck")
    infused_at = clock() + timedelta(minutes=5)
    journey.complete(
        "Task_RecordInfusion",
        infusion_started_at=iso(infused_at),
        infusion_completed_at=iso(infused_at + timedelta(minutes=15)),
    )
    clock.advance(days=29)
    from server.workflow.therapies import fire_due_timers

    with app_context(api):
        assert fire_due_timers(journey.id)
    journey.complete("Task_Day28FollowUp")

    final = journey.detail()
    assert final["status"] == "completed"
    v2v = final["vein_to_vein"]
    assert v2v["collection_at"] == iso(collected_at) and v2v["infusion_at"] == iso(infused_at)
    assert v2v["elapsed_seconds"] == round((infused_at - collected_at).total_seconds()) and v2v["infused"] is True

    chain = api.as_(world["auditor"]).get(f"{journey.url}/custody").get_json()
    assert [(t["material_id"], t["to_party"]) for t in chain["items"]] == [
        ("LEUKOPAK-1", "ColdChain courier"),
        ("LEUKOPAK-1", "MFG-1 goods-in"),
        ("CAR-T-1", "ColdChain courier"),
        ("CAR-T-1", "SITE-A cell therapy lab"),
        ("CAR-T-1", "SITE-A infusion ward"),
    ]
    assert chain["breaks"] == [] and all(t["verified_coi"] == journey.coi for t in chain["items"])

    # The record, electronic form.
    record = api.as_(world["auditor"]).get(f"{journey.url}/record.json").get_json()
    assert record["therapy"]["coi_eye_readable"] == eye_readable and record["therapy"]["status"] == "completed"
    assert record["vein_to_vein"] == {**v2v, "elapsed_days": v2v["elapsed_days"]}
    completed_steps = [s["activity_id"] for s in record["steps"] if s["action"] == "task.completed"]
    assert completed_steps == [
        "Task_Enrolment",
        "Task_Scheduling",
        "Task_Apheresis",
        "Task_ReceiveAtManufacturing",
        "Task_QaRelease",
        "Task_QuarantineProduct",
        "Task_ExcursionAssessment",
        "Task_ReceiveAtCentre",
        "Task_ConfirmAvailability",
        "Task_StartLymphodepletion",
        "Task_BedsideCheck",
        "Task_RecordInfusion",
        "Task_Day28FollowUp",
    ]
    assert all(s["actor"] and s["at"] for s in record["steps"])
    assert all(s["actor_name"] for s in record["steps"] if s["action"] == "task.completed")
    assert [s["actor_name"] for s in record["steps"] if s["action"] == "timer.fired"] == ["Timer scheduler"]
    assert [(s["printed_name"], s["meaning"], s["step"]) for s in record["signatures"]] == [
        ("Qa Person", "approval", "Release batch (QA)"),
        ("Qa Person", "approval", "Assess temperature excursion (QA)"),  # released from quarantine for use
    ]
    assert [t["id"] for t in record["custody"]["transfers"]] == [t["id"] for t in chain["items"]]
    assert record["conditions"]["summary"]["count"] == 480
    assert [e["temperature_c"] for e in record["conditions"]["excursions"]] == [-141.5]
    alerts = {a["kind"]: a for a in record["alerts"]}
    assert alerts["coi_mismatch"]["id"] == mismatch_alert and alerts["coi_mismatch"]["severity"] == "high"
    assert alerts["coi_mismatch"]["data"]["scanned"] == "&/" + other.coi
    assert alerts["condition_excursion"]["id"] == cold["alert_id"]
    actions = [e["action"] for e in record["audit"]["entries"]]
    for action in (
        "custody.transferred",
        "coi.mismatch",
        "condition.excursion",
        "alert.raised",
        "signature.applied",
        "therapy.completed",
    ):
        assert action in actions, action
    assert actions.count("custody.transferred") == 5
    excursion_message = [
        e
        for e in record["audit"]["entries"]
        if e["action"] == "message.received" and e["data"]["name"] == "condition.excursion"
    ]
    assert [e["data"]["activity_id"] for e in excursion_message] == ["Event_ReturnExcursion"]
    assert record["audit"]["entries_intact"] is True

    # The record, human-readable form: the same story.
    pdf = api.as_(world["auditor"]).get(f"{journey.url}/record.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    words = pdf_words(pdf.data)
    for expected in (
        eye_readable,
        "PT-42",
        "Autologous CAR-T",
        "Qa Person",
        "approval",
        "Release batch (QA)",
        "LEUKOPAK-1",
        "CAR-T-1",
        "SITE-A apheresis unit",
        "MFG-1 goods-in",
        "SITE-A infusion ward",
        "-141.5 °C",
        "coi_mismatch",
        "condition_excursion",
        "Bedside identity check and thaw",
        "Record infusion",
        f"{v2v['elapsed_days']} days",
        iso(collected_at),
        iso(infused_at),
        f"{record['audit']['count']} entries",
        "480 from",
    ):
        assert expected in words, expected
    for entry in record["audit"]["entries"]:
        assert f"{entry['seq']} " in words and entry["action"] in words
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def app_context(api):
    """The application context of the test client's app (for driving the timer scheduler by hand)."""
    return api.client.application.app_context()
