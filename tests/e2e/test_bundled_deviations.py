"""Every deviation and escalation path of the bundled diagrams, through the REST API.

Each case is a journey written as its steps (``task``, ``message``, ``advance`` of tests/support/journeys.py),
built from the stretches of the autologous journey below, and what the therapy shows once they are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ..support.journeys import advance, message, task
from .test_bundled_journeys import NETWORK_PARTIES, audit_actions, run_journey

# -- the autologous journey in the stretches the cases share ----------------------------------------------
COLLECTED = [task("Task_Enrolment"), task("Task_Scheduling"), task("Task_Apheresis")]
TO_RECEIPT = [
    *COLLECTED,
    message("courier.picked_up", courier="ColdChain", tracking="CC-1"),
    message("shipment.delivered"),
]
RECEIVED = task("Task_ReceiveAtManufacturing")
MANUFACTURE = [message("mes.manufacturing_started", batch="B-1"), message("mes.manufacturing_completed", batch="B-1")]
TO_QC = [*TO_RECEIPT, RECEIVED, *MANUFACTURE]
QC_FAILED = message("qc.results", result="fail")
RELEASED = [message("qc.results", result="pass"), task("Task_QaRelease")]
RETURNED = [
    message("return.picked_up"),
    message("return.delivered"),
    task("Task_ReceiveAtCentre"),
    task("Task_ConfirmAvailability"),
    task("Task_StartLymphodepletion"),
]
INFUSED_AND_FOLLOWED_UP = [
    task("Task_BedsideCheck"),
    task("Task_RecordInfusion"),
    advance(days=29),
    task("Task_Day28FollowUp"),
]


@pytest.fixture
def journey(api, network, clock, bundled):
    """Take the steps in a new therapy of a bundled process, collected at APH-1, made at MFG-2 and shipped by
    COURIER-1; returns the therapy as the API then shows it."""

    def take(process_key: str, *steps: tuple) -> dict:
        return run_journey(api, network, clock, process_key, list(steps), NETWORK_PARTIES)

    return take


# -- deviations that end the therapy ------------------------------------------------------------------------
@dataclass(frozen=True)
class Ending:
    """An autologous journey that ends the therapy at ``end_event``, signed on the way with ``signatures``."""

    steps: list[tuple]
    end_event: str
    signatures: list[str]  # the meanings of the signatures applied, in order


ENDINGS = {
    "material_rejected_at_receipt_and_not_collected_again": Ending(
        [
            *TO_RECEIPT,
            task(
                "Task_ReceiveAtManufacturing",
                receipt_decision="rejected",
                bags_intact=False,
                rejection_reason="Bag leaking on arrival",
            ),
            task("Task_RecollectionDecision", recollection_decision="end_therapy"),
        ],
        "EndEvent_MaterialRejected",
        [],
    ),
    "qc_fail_then_remanufacture_then_release": Ending(
        [
            *TO_QC,
            QC_FAILED,
            task("Task_PhysicianDecision", physician_decision="remanufacture"),
            *MANUFACTURE,
            *RELEASED,
            *RETURNED,
            *INFUSED_AND_FOLLOWED_UP,
        ],
        "EndEvent_TherapyCompleted",
        ["responsibility", "approval"],
    ),
    "qc_fail_then_end_therapy": Ending(
        [
            *TO_QC,
            QC_FAILED,
            task(
                "Task_PhysicianDecision",
                physician_decision="end_therapy",
                physician_decision_rationale="Patient no longer fit.",
            ),
        ],
        "EndEvent_TherapyEnded",
        ["responsibility"],
    ),
    "release_rejected_then_infuse_under_exception_with_second_signature": Ending(
        [
            *TO_QC,
            message("qc.results", result="pass"),
            task("Task_QaRelease", release_decision="rejected", release_comment="Sterility sample invalid."),
            task("Task_PhysicianDecision", physician_decision="infuse_under_exception"),
            *RETURNED,
            *INFUSED_AND_FOLLOWED_UP,
        ],
        "EndEvent_TherapyCompleted",
        ["rejection", "responsibility"],
    ),
    "excursion_on_return_leg_quarantine_then_discard": Ending(
        [
            *TO_QC,
            *RELEASED,
            message("return.picked_up"),
            message("condition.excursion", temperature_c=-131.0),
            message("return.delivered"),
            task("Task_QuarantineProduct"),
            task("Task_ExcursionAssessment", excursion_disposition="discard"),
        ],
        "EndEvent_ProductDiscarded",
        ["approval", "rejection"],  # the batch released, then the product discarded after the excursion
    ),
}


@pytest.mark.parametrize("case", ENDINGS)
def test_a_deviation_ends_the_therapy_at_its_end_event(journey, api, world, case):
    ending = ENDINGS[case]
    final = journey("autologous_car_t", *ending.steps)
    entries = audit_actions(api, world, final["id"])
    [completed] = [e for e in entries if e["action"] == "therapy.completed"]
    assert final["status"] == "completed" and completed["data"]["end_activity_id"] == ending.end_event
    assert [e["data"]["meaning"] for e in entries if e["action"] == "signature.applied"] == ending.signatures


# -- escalations: the journey goes on, the late activity is named and alerted -------------------------------
def escalations(api, world, therapy):
    """The late activities named by the therapy's escalations, and its open escalation alerts."""
    late = [
        e["data"]["late_activity_id"]
        for e in audit_actions(api, world, therapy["id"])
        if e["action"] == "task.escalated"
    ]
    alerts = api.as_(world["auditor"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    return late, [a for a in alerts if a["kind"] == "escalation"]


@dataclass(frozen=True)
class LateDelivery:
    """A journey of ``process_key`` whose delivery comes ``hours`` after the pick-up, past its deadline."""

    process_key: str
    to_pick_up: list[tuple]  # the steps up to and including the pick-up
    hours: int
    receipt: tuple  # the task that receives the delivery
    late_activity: str


LATE_DELIVERIES = {
    "autologous_fresh_material": LateDelivery(
        "autologous_car_t",
        [*COLLECTED, message("courier.picked_up", tracking="CC-1")],
        25,
        RECEIVED,
        "Task_AwaitFreshDelivery",
    ),
    "allogeneic_product": LateDelivery(
        "allogeneic",
        [task("Task_OrderFromInventory"), task("Task_AllocateLot"), message("shipment.picked_up")],
        49,
        task("Task_ReceiveAtSite"),
        "Task_AwaitDelivery",
    ),
}


@pytest.mark.parametrize("case", LATE_DELIVERIES)
def test_a_late_delivery_escalates_and_the_journey_goes_on(journey, api, world, case):
    late_delivery = LATE_DELIVERIES[case]
    final = journey(
        late_delivery.process_key,
        *late_delivery.to_pick_up,
        advance(hours=late_delivery.hours),
        message("shipment.delivered"),
        late_delivery.receipt,
    )
    late, alerts = escalations(api, world, final)
    assert late == [late_delivery.late_activity] and len(alerts) == 1
    assert final["status"] == "active"


def test_manufacturing_past_its_planned_duration_escalates(journey, api, world):
    final = journey(
        "autologous_car_t",
        *TO_RECEIPT,
        RECEIVED,
        message("mes.manufacturing_started", batch="B-1"),
        advance(days=29),
        message("mes.manufacturing_completed", batch="B-1"),
    )
    late, alerts = escalations(api, world, final)
    assert late == ["Task_AwaitManufacturingCompleted"] and len(alerts) == 1
    assert final["waiting_for"][0]["name"] == "qc.results"


def test_product_not_infused_within_its_window_escalates(journey, api, world):
    final = journey("autologous_car_t", *TO_QC, *RELEASED, *RETURNED, advance(days=15), task("Task_BedsideCheck"))
    late, alerts = escalations(api, world, final)
    assert late == ["Task_BedsideCheck"] and alerts[0]["role"] == "coordinator"
    assert [t["activity_id"] for t in final["open_tasks"]] == ["Task_RecordInfusion"]


def test_thaw_to_infusion_over_30_minutes_escalates(journey, api, world):
    final = journey(
        "autologous_car_t",
        *TO_QC,
        *RELEASED,
        *RETURNED,
        task("Task_BedsideCheck"),
        advance(minutes=31),
        task("Task_RecordInfusion"),
    )
    late, _alerts = escalations(api, world, final)
    assert late == ["Task_RecordInfusion"]
    assert final["waiting_for"][0]["activity_id"] == "Event_Day28"


# -- the booked slots ----------------------------------------------------------------------------------------
NOT_PICKED_UP = (
    "Fresh material not picked up 12 h before the booked manufacturing start: collect it now or rebook the slot"
)


def notifications(api, world, therapy):
    """The therapy's notification alerts: (role, message)."""
    alerts = api.as_(world["auditor"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    return [(a["role"], a["message"]) for a in alerts if a["kind"] == "notification"]


def test_logistics_is_warned_when_the_material_has_not_left_12_h_before_the_booked_manufacturing_start(
    journey, api, world
):
    # Collected at once; manufacturing is booked from 2026-11-25 08:00, the clock stands at 2026-11-23 09:00.
    waiting = journey("autologous_car_t", *COLLECTED)
    (due,) = [w["due_at"] for w in waiting["waiting_for"] if w["type"] == "timer"]
    assert due == "2026-11-24T20:00:00Z"
    assert ("logistics", NOT_PICKED_UP) not in notifications(api, world, waiting)
    final = journey(
        "autologous_car_t", *COLLECTED, advance(hours=35, minutes=1), message("courier.picked_up", tracking="CC-1")
    )
    assert notifications(api, world, final).count(("logistics", NOT_PICKED_UP)) == 1
    assert final["status"] == "active" and "shipment.delivered" in [w.get("name") for w in final["waiting_for"]]


def test_a_refused_booking_opens_an_incident_and_a_booking_through_the_api_lets_the_therapy_go_on(
    journey, api, network
):
    from ..support.journeys import APHERESIS_WINDOW, MANUFACTURING_WINDOW, complete, free_slot, only_task

    therapy = journey("autologous_car_t", task("Task_Enrolment"))
    apheresis = free_slot(api, network["admin"], "APH-1", "apheresis", APHERESIS_WINDOW)
    at_mfg_1 = free_slot(api, network["admin"], "MFG-1", "manufacturing", MANUFACTURING_WINDOW)
    scheduling = only_task(api, network["coord"], therapy["id"])
    data = {"apheresis_slot_id": apheresis, "manufacturing_slot_id": at_mfg_1}
    assert complete(api, network["coord"], scheduling["id"], data).status_code == 200
    coord = api.as_(network["coord"])
    held = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert (
        held["open_tasks"] == [] and coord.get(f"/api/v1/therapies/{therapy['id']}/bookings").get_json()["items"] == []
    ), "all the places or none"
    (incident,) = api.as_(network["admin"]).get(f"/api/v1/incidents?therapy_id={therapy['id']}").get_json()["items"]
    assert incident["activity_id"] == "Task_BookSlots" and f"slot {at_mfg_1} (wrong_site)" in incident["message"]
    # The coordinator books the chain through the API, MFG-2's slot this time; the retry keeps what is booked.
    at_mfg_2 = free_slot(api, network["admin"], "MFG-2", "manufacturing", MANUFACTURING_WINDOW)
    for slot_id in (apheresis, at_mfg_2):
        booked = coord.post(f"/api/v1/therapies/{therapy['id']}/bookings", json={"slot_id": slot_id})
        assert booked.status_code == 201, booked.get_json()
    retried = api.as_(network["admin"]).post(f"/api/v1/incidents/{incident['id']}/retry")
    assert retried.status_code == 200, retried.get_json()
    after = coord.get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [t["activity_id"] for t in after["open_tasks"]] == ["Task_Apheresis"]
    assert {k: v["site"] for k, v in after["data"]["bookings"].items()} == {
        "apheresis": "APH-1",
        "manufacturing": "MFG-2",
    }
