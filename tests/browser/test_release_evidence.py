"""Done when: QA sees what a batch release rests on beside the form, finds the batch number filled in, and a
rejection is signed with the meaning "rejection"."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from server.demo_data import form_data

from .people import log_in
from .test_accessibility import describe, serious_violations

MESSAGES = {
    "courier.picked_up": {"courier": "ColdChain", "tracking": "CC-9"},
    "shipment.delivered": {"delivered_to": "MFG-1"},
    "mes.manufacturing_started": {"batch": "B-26-0901"},
    "mes.manufacturing_completed": {"batch": "B-26-0901"},
    "qc.results": {"result": "pass", "report": "QC-0901"},
}


def _therapy_at_release(served) -> dict:
    """A new therapy driven through the API to its QA release, with its material handed to the courier."""
    therapy = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={
            "process_key": "autologous_car_t",
            "site": "SITE-A",
            "patient": {"reference": f"PT-REL-{uuid.uuid4().hex[:4]}"},
            "parties": {"manufacturing": "MFG-1", "logistics": "COURIER-1"},
        },
    ).json()
    steps = [
        ("coordinator", "Task_Enrolment"),
        ("coordinator", "Task_Scheduling"),
        ("coordinator", "Task_Apheresis"),
        "courier.picked_up",
        "shipment.delivered",
        ("manufacturing", "Task_ReceiveAtManufacturing"),
        "mes.manufacturing_started",
        "mes.manufacturing_completed",
        "qc.results",
    ]
    for step in steps:
        if isinstance(step, str):
            body = {"name": step, "therapy_id": therapy["id"], "payload": MESSAGES[step]}
            answer = served.api("integrator", "POST", "/messages", json=body)
        else:
            user, activity = step
            listed = served.api(user, "GET", f"/tasks?therapy_id={therapy['id']}").json()["items"]
            task = next(t for t in listed if t["activity_id"] == activity)
            body = {"data": form_data(task["form"]["name"], therapy["coi"])}
            answer = served.api(user, "POST", f"/tasks/{task['id']}/complete", json=body)
        assert answer.status_code == 200, answer.text
        if step == ("coordinator", "Task_Apheresis"):
            handoff = {
                "material_id": "LEUKOPAK-9",
                "from_party": "SITE-A apheresis",
                "to_party": "ColdChain courier",
                "location": "SITE-A dock",
                "scanned_coi": "&/" + therapy["coi"],
            }
            handed = served.api("integrator", "POST", f"/therapies/{therapy['id']}/custody", json=handoff)
            assert handed.status_code == 201, handed.text
    return therapy


def test_qa_sees_the_evidence_and_rejects_a_batch_with_the_meaning_rejection(page, served):
    therapy = _therapy_at_release(served)
    [release] = served.api("qa", "GET", f"/tasks?therapy_id={therapy['id']}").json()["items"]
    log_in(page, "qa", served.password)
    page.goto(f"/tasks/{release['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Release batch (QA)")

    evidence = page.get_by_test_id("evidence")
    expect(evidence.get_by_role("heading", name="What this decision rests on")).to_be_visible()
    expect(page.get_by_test_id("evidence-message-qc")).to_contain_text("pass")
    expect(page.get_by_test_id("evidence-message-qc")).to_contain_text("QC-0901")
    expect(page.get_by_test_id("evidence-message-mes_started")).to_contain_text("B-26-0901")
    expect(page.get_by_test_id("evidence-excursions")).to_have_text("0 excursions")
    expect(page.get_by_test_id("evidence-custody")).to_contain_text("ColdChain courier")
    expect(page.get_by_label("Batch number")).to_have_value("B-26-0901")  # filled in from the MES message
    violations = serious_violations(page)
    assert not violations, describe(violations)

    # Releasing would sign "approval"; choosing to reject changes the meaning to sign before anything is sent.
    expect(page.get_by_test_id("signature-meaning")).to_have_text("approval")
    page.get_by_label("Batch record reviewed").check()
    page.get_by_label("QC results reviewed").check()
    page.get_by_label("Reject batch").check()
    page.get_by_label("Comment").fill("Sterility sample invalid.")
    expect(page.get_by_test_id("signature-meaning")).to_have_text("rejection")
    page.get_by_label("I sign this record with the meaning “rejection”").check()
    page.get_by_label("Your password").fill(served.password)
    page.get_by_role("button", name="Sign and complete").click()
    expect(page.get_by_role("status")).to_contain_text("Completed: Release batch (QA)")

    page.goto(f"/therapies/{therapy['id']}")
    expect(page.get_by_test_id("timeline")).to_contain_text("(rejection)")
    signed = served.api("auditor", "GET", f"/therapies/{therapy['id']}").json()["signatures"]
    assert [s["meaning"] for s in signed] == ["rejection"]
