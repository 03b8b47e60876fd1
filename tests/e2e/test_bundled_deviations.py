"""Every deviation and escalation path of the bundled autologous diagram, through the REST API."""

from __future__ import annotations

from .test_bundled_journeys import audit_actions, run_journey

TO_RECEIPT = [
    ("task", "Task_Enrolment"),
    ("task", "Task_Scheduling"),
    ("task", "Task_Apheresis"),
    ("message", "courier.picked_up", {"courier": "ColdChain"}),
    ("message", "shipment.delivered", {}),
]
MANUFACTURE = [
    ("message", "mes.manufacturing_started", {"batch": "B-1"}),
    ("message", "mes.manufacturing_completed", {"batch": "B-1"}),
]
RETURN_AND_INFUSE = [
    ("message", "return.picked_up", {}),
    ("message", "return.delivered", {}),
    ("task", "Task_ReceiveAtCentre"),
    ("task", "Task_ConfirmAvailability"),
    ("task", "Task_StartLymphodepletion"),
    ("task", "Task_BedsideCheck"),
    ("task", "Task_RecordInfusion"),
    ("advance", {"days": 29}),
    ("task", "Task_Day28FollowUp"),
]


def ended_at(api, world, therapy):
    """The end event the therapy reached."""
    completed = [e for e in audit_actions(api, world, therapy["id"]) if e["action"] == "therapy.completed"]
    assert len(completed) == 1
    return completed[0]["data"]["end_activity_id"]


def test_material_rejected_at_receipt_ends_the_therapy(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            (
                "task",
                "Task_ReceiveAtManufacturing",
                {"receipt_decision": "rejected", "bags_intact": False, "rejection_reason": "Bag leaking on arrival"},
            )
        ],
    )
    assert final["status"] == "completed" and ended_at(api, world, final) == "EndEvent_MaterialRejected"


def test_qc_fail_then_remanufacture_then_release_completes(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            ("task", "Task_ReceiveAtManufacturing"),
            *MANUFACTURE,
            ("message", "qc.results", {"result": "fail"}),
            ("task", "Task_PhysicianDecision", {"physician_decision": "remanufacture"}),
            *MANUFACTURE,
            ("message", "qc.results", {"result": "pass"}),
            ("task", "Task_QaRelease"),
            *RETURN_AND_INFUSE,
        ],
    )
    assert ended_at(api, world, final) == "EndEvent_TherapyCompleted"
    signatures = [e for e in audit_actions(api, world, final["id"]) if e["action"] == "signature.applied"]
    assert [s["data"]["meaning"] for s in signatures] == ["responsibility", "approval"]


def test_qc_fail_then_end_therapy(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            ("task", "Task_ReceiveAtManufacturing"),
            *MANUFACTURE,
            ("message", "qc.results", {"result": "fail"}),
            (
                "task",
                "Task_PhysicianDecision",
                {"physician_decision": "end_therapy", "physician_decision_rationale": "Patient no longer fit."},
            ),
        ],
    )
    assert ended_at(api, world, final) == "EndEvent_TherapyEnded"


def test_release_rejected_then_infuse_under_exception_with_second_signature(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            ("task", "Task_ReceiveAtManufacturing"),
            *MANUFACTURE,
            ("message", "qc.results", {"result": "pass"}),
            (
                "task",
                "Task_QaRelease",
                {"release_decision": "rejected", "release_comment": "Sterility sample invalid."},
            ),
            ("task", "Task_PhysicianDecision", {"physician_decision": "infuse_under_exception"}),
            *RETURN_AND_INFUSE,
        ],
    )
    assert ended_at(api, world, final) == "EndEvent_TherapyCompleted"
    signatures = [e for e in audit_actions(api, world, final["id"]) if e["action"] == "signature.applied"]
    assert [s["data"]["meaning"] for s in signatures] == ["approval", "responsibility"]


def test_excursion_on_return_leg_quarantine_then_discard(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            ("task", "Task_ReceiveAtManufacturing"),
            *MANUFACTURE,
            ("message", "qc.results", {"result": "pass"}),
            ("task", "Task_QaRelease"),
            ("message", "return.picked_up", {}),
            ("message", "condition.excursion", {"temperature_c": -131.0}),
            ("message", "return.delivered", {}),
            ("task", "Task_QuarantineProduct"),
            ("task", "Task_ExcursionAssessment", {"excursion_disposition": "discard"}),
        ],
    )
    assert ended_at(api, world, final) == "EndEvent_ProductDiscarded"


def test_late_fresh_delivery_escalates_and_the_journey_goes_on(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        [
            ("task", "Task_Enrolment"),
            ("task", "Task_Scheduling"),
            ("task", "Task_Apheresis"),
            ("message", "courier.picked_up", {}),
            ("advance", {"hours": 25}),
            ("message", "shipment.delivered", {}),
            ("task", "Task_ReceiveAtManufacturing"),
        ],
    )
    entries = audit_actions(api, world, final["id"])
    escalated = [e for e in entries if e["action"] == "task.escalated"]
    assert len(escalated) == 1 and escalated[0]["data"]["late_activity_id"] == "Task_AwaitFreshDelivery"
    assert final["status"] == "active"


def escalations(api, world, therapy):
    """The late activities named by the therapy's escalations, and its open escalation alerts."""
    late = [
        e["data"]["late_activity_id"]
        for e in audit_actions(api, world, therapy["id"])
        if e["action"] == "task.escalated"
    ]
    alerts = api.as_(world["auditor"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    return late, [a for a in alerts if a["kind"] == "escalation"]


TO_RETURN_RECEIPT = TO_RECEIPT + [
    ("task", "Task_ReceiveAtManufacturing"),
    *MANUFACTURE,
    ("message", "qc.results", {"result": "pass"}),
    ("task", "Task_QaRelease"),
    ("message", "return.picked_up", {}),
    ("message", "return.delivered", {}),
    ("task", "Task_ReceiveAtCentre"),
    ("task", "Task_ConfirmAvailability"),
    ("task", "Task_StartLymphodepletion"),
]


def test_manufacturing_past_its_planned_duration_escalates(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RECEIPT
        + [
            ("task", "Task_ReceiveAtManufacturing"),
            ("message", "mes.manufacturing_started", {}),
            ("advance", {"days": 29}),
            ("message", "mes.manufacturing_completed", {}),
        ],
    )
    late, alerts = escalations(api, world, final)
    assert late == ["Task_AwaitManufacturingCompleted"] and len(alerts) == 1
    assert final["waiting_for"][0]["name"] == "qc.results"


def test_product_not_infused_within_its_window_escalates(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RETURN_RECEIPT + [("advance", {"days": 15}), ("task", "Task_BedsideCheck")],
    )
    late, alerts = escalations(api, world, final)
    assert late == ["Task_BedsideCheck"] and alerts[0]["role"] == "coordinator"
    assert [t["activity_id"] for t in final["open_tasks"]] == ["Task_RecordInfusion"]


def test_thaw_to_infusion_over_30_minutes_escalates(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "autologous_car_t",
        TO_RETURN_RECEIPT
        + [("task", "Task_BedsideCheck"), ("advance", {"minutes": 31}), ("task", "Task_RecordInfusion")],
    )
    late, _alerts = escalations(api, world, final)
    assert late == ["Task_RecordInfusion"]
    assert final["waiting_for"][0]["activity_id"] == "Event_Day28"


def test_allogeneic_delivery_overdue_escalates(api, world, clock, bundled):
    final = run_journey(
        api,
        world,
        clock,
        "allogeneic",
        [
            ("task", "Task_OrderFromInventory"),
            ("task", "Task_AllocateLot"),
            ("message", "shipment.picked_up", {}),
            ("advance", {"hours": 49}),
            ("message", "shipment.delivered", {}),
            ("task", "Task_ReceiveAtSite"),
        ],
    )
    late, alerts = escalations(api, world, final)
    assert late == ["Task_AwaitDelivery"] and len(alerts) == 1
