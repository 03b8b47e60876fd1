"""Every deviation and escalation path of the bundled autologous diagram, through the REST API."""

from __future__ import annotations

from .test_bundled_journeys import audit_actions, run_journey

TO_RECEIPT = [
    ("task", "Task_Enrolment"), ("task", "Task_Scheduling"), ("task", "Task_Apheresis"),
    ("message", "courier.picked_up", {"courier": "ColdChain"}), ("message", "shipment.delivered", {}),
]
MANUFACTURE = [("message", "mes.manufacturing_started", {"batch": "B-1"}),
               ("message", "mes.manufacturing_completed", {"batch": "B-1"})]
RETURN_AND_INFUSE = [
    ("message", "return.picked_up", {}), ("message", "return.delivered", {}),
    ("task", "Task_ReceiveAtCentre"), ("task", "Task_ConfirmAvailability"), ("task", "Task_StartLymphodepletion"),
    ("task", "Task_BedsideCheck"), ("task", "Task_RecordInfusion"), ("advance", {"days": 29}),
    ("task", "Task_Day28FollowUp"),
]


def ended_at(api, world, therapy):
    """The end event the therapy reached."""
    completed = [e for e in audit_actions(api, world, therapy["id"]) if e["action"] == "therapy.completed"]
    assert len(completed) == 1
    return completed[0]["data"]["end_activity_id"]


def test_material_rejected_at_receipt_ends_the_therapy(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", TO_RECEIPT + [
        ("task", "Task_ReceiveAtManufacturing", {"receipt_decision": "rejected", "bags_intact": False,
                                                 "rejection_reason": "Bag leaking on arrival"})])
    assert final["status"] == "completed" and ended_at(api, world, final) == "EndEvent_MaterialRejected"


def test_qc_fail_then_remanufacture_then_release_completes(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", TO_RECEIPT + [
        ("task", "Task_ReceiveAtManufacturing"), *MANUFACTURE, ("message", "qc.results", {"result": "fail"}),
        ("task", "Task_PhysicianDecision", {"physician_decision": "remanufacture"}),
        *MANUFACTURE, ("message", "qc.results", {"result": "pass"}), ("task", "Task_QaRelease"),
        *RETURN_AND_INFUSE])
    assert ended_at(api, world, final) == "EndEvent_TherapyCompleted"
    signatures = [e for e in audit_actions(api, world, final["id"]) if e["action"] == "signature.applied"]
    assert [s["data"]["meaning"] for s in signatures] == ["responsibility", "approval"]


def test_qc_fail_then_end_therapy(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", TO_RECEIPT + [
        ("task", "Task_ReceiveAtManufacturing"), *MANUFACTURE, ("message", "qc.results", {"result": "fail"}),
        ("task", "Task_PhysicianDecision", {"physician_decision": "end_therapy",
                                            "physician_decision_rationale": "Patient no longer fit."})])
    assert ended_at(api, world, final) == "EndEvent_TherapyEnded"


def test_release_rejected_then_infuse_under_exception_with_second_signature(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", TO_RECEIPT + [
        ("task", "Task_ReceiveAtManufacturing"), *MANUFACTURE, ("message", "qc.results", {"result": "pass"}),
        ("task", "Task_QaRelease", {"release_decision": "rejected", "release_comment": "Sterility sample invalid."}),
        ("task", "Task_PhysicianDecision", {"physician_decision": "infuse_under_exception"}),
        *RETURN_AND_INFUSE])
    assert ended_at(api, world, final) == "EndEvent_TherapyCompleted"
    signatures = [e for e in audit_actions(api, world, final["id"]) if e["action"] == "signature.applied"]
    assert [s["data"]["meaning"] for s in signatures] == ["approval", "responsibility"]


def test_excursion_on_return_leg_quarantine_then_discard(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", TO_RECEIPT + [
        ("task", "Task_ReceiveAtManufacturing"), *MANUFACTURE, ("message", "qc.results", {"result": "pass"}),
        ("task", "Task_QaRelease"), ("message", "return.picked_up", {}),
        ("message", "condition.excursion", {"temperature_c": -131.0}),
        ("message", "return.delivered", {}), ("task", "Task_QuarantineProduct"),
        ("task", "Task_ExcursionAssessment", {"excursion_disposition": "discard"})])
    assert ended_at(api, world, final) == "EndEvent_ProductDiscarded"


def test_late_fresh_delivery_escalates_and_the_journey_goes_on(api, world, clock, bundled):
    final = run_journey(api, world, clock, "autologous_car_t", [
        ("task", "Task_Enrolment"), ("task", "Task_Scheduling"), ("task", "Task_Apheresis"),
        ("message", "courier.picked_up", {}), ("advance", {"hours": 25}), ("message", "shipment.delivered", {}),
        ("task", "Task_ReceiveAtManufacturing")])
    entries = audit_actions(api, world, final["id"])
    escalated = [e for e in entries if e["action"] == "task.escalated"]
    assert len(escalated) == 1 and escalated[0]["data"]["late_activity_id"] == "Task_AwaitFreshDelivery"
    assert final["status"] == "active"
