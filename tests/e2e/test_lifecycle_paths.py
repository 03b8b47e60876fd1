"""The bundled autologous diagram's lifecycle paths through the REST API: a therapy sent back to scheduling before
its collection (its bookings move with the reason code), and material rejected at the manufacturing receipt
collected again under the same COI (a new DIN, the custody chain going on, both collections in the record)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import OutboxEvent

from ..integration.test_web_lifecycle import _words
from ..integration.test_web_network import _post, _section, _text
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from ..support.journeys import free_slot, message, task
from ..support.pages import signed_in
from .test_bundled_journeys import NETWORK_PARTIES, run_journey, take_steps

SCHEDULED = [task("Task_Enrolment"), task("Task_Scheduling")]
# The second chain of slots, three days after the first (collection on the 27th, manufacturing from the 28th).
LATER_APHERESIS = ("2026-11-27T08:00:00Z", "2026-11-27T12:00:00Z")
LATER_MANUFACTURING = ("2026-11-28T08:00:00Z", "2026-11-29T08:00:00Z")
FIRST_DIN, SECOND_DIN = "G123498654321", "G123498654399"


def _later_slots(api, world) -> dict:
    return {
        "apheresis_slot_id": free_slot(api, world["admin"], "APH-1", "apheresis", LATER_APHERESIS),
        "manufacturing_slot_id": free_slot(api, world["admin"], "MFG-2", "manufacturing", LATER_MANUFACTURING),
    }


def _open(therapy: dict) -> list[str]:
    return [t["activity_id"] for t in therapy["open_tasks"]]


def _detail(api, world, therapy_id: str) -> dict:
    return api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy_id}").get_json()


def _bookings(api, world, therapy_id: str) -> list[tuple]:
    items = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy_id}/bookings").get_json()["items"]
    return [(b["kind"], b["start"], b["status"], b["reason_code"]) for b in items]


def _reschedule(api, token, therapy_id: str, **body):
    return api.as_(token).post(f"/api/v1/therapies/{therapy_id}/reschedule", json=body)


def _record(api, world, therapy_id: str) -> dict:
    return api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy_id}/record.json").get_json()


def test_sent_back_to_scheduling_before_the_collection_its_bookings_move_with_the_reason(
    app, api, network, clock, bundled
):
    therapy = run_journey(api, network, clock, "autologous_car_t", SCHEDULED, NETWORK_PARTIES)
    assert _open(therapy) == ["Task_Apheresis"] and therapy["reschedulable"] is True
    sent = _reschedule(api, network["coord"], therapy["id"], reason_code="PATIENT_REQUEST", reason="Family event")
    assert sent.status_code == 200, sent.get_json()
    back = _detail(api, network, therapy["id"])
    assert _open(back) == ["Task_Scheduling"] and back["reschedulable"] is False
    assert back["status"] == "active"
    final = take_steps(api, network, clock, back, [task("Task_Scheduling", **_later_slots(api, network))])
    assert _open(final) == ["Task_Apheresis"]
    assert sorted(_bookings(api, network, therapy["id"])) == [
        ("apheresis", "2026-11-24T08:00:00Z", "moved", None),
        ("apheresis", LATER_APHERESIS[0], "booked", "PATIENT_REQUEST"),
        ("manufacturing", "2026-11-25T08:00:00Z", "moved", None),
        ("manufacturing", LATER_MANUFACTURING[0], "booked", "PATIENT_REQUEST"),
    ]
    assert final["data"]["bookings"]["manufacturing"]["start"] == LATER_MANUFACTURING[0]
    steps = [s["name"] for s in _record(api, network, therapy["id"])["steps"]]
    assert "Sent back to scheduling (PATIENT_REQUEST: Family event)" in steps
    assert f"Rebooked apheresis at APH-1, {LATER_APHERESIS[0]} (PATIENT_REQUEST: Family event)" not in steps
    assert f"Rebooked apheresis at APH-1, {LATER_APHERESIS[0]} (PATIENT_REQUEST)" in steps
    timeline = api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}/timeline").get_json()["items"]
    assert [i["words"] for i in timeline if i["action"] == "therapy.rescheduled"] == [
        "Sent back to scheduling (PATIENT_REQUEST: Family event)"
    ]
    with app.app_context():
        published = db.session.execute(
            select(OutboxEvent.type).where(OutboxEvent.therapy_id == therapy["id"]).order_by(OutboxEvent.id)
        ).scalars()
        published = list(published)
    assert published.index("therapy.rescheduled") < published.index("booking.moved")


@pytest.mark.parametrize(
    ("case", "who", "body", "status", "code"),
    [
        ("collected", "coord", {"reason_code": "PATIENT_REQUEST"}, 409, "not_reschedulable"),
        ("held", "coord", {"reason_code": "PATIENT_REQUEST"}, 409, "on_hold"),
        ("waiting", "coord", {"reason_code": "NO_SUCH_CODE"}, 422, "unknown_reason_code"),
        ("waiting", "coord", {"reason_code": "PATIENT_UNWELL"}, 422, "unknown_reason_code"),  # a hold code
        ("waiting", "coord", {"reason_code": "OTHER"}, 422, "reason_required"),
        ("waiting", "coord", {}, 422, "invalid_request"),
        ("waiting", "coordb", {"reason_code": "PATIENT_REQUEST"}, 404, "not_found"),  # another centre
        ("waiting", "apheresis", {"reason_code": "PATIENT_REQUEST"}, 403, "forbidden"),  # collects, does not treat
        ("waiting", "mfg2", {"reason_code": "PATIENT_REQUEST"}, 403, "forbidden"),
    ],
)
def test_sending_back_is_refused_where_it_may_not_happen_and_changes_nothing(
    api, network, clock, bundled, case, who, body, status, code
):
    steps = [*SCHEDULED, task("Task_Apheresis")] if case == "collected" else SCHEDULED
    therapy = run_journey(api, network, clock, "autologous_car_t", steps, NETWORK_PARTIES)
    if case == "held":
        held = api.as_(network["coord"]).post(
            f"/api/v1/therapies/{therapy['id']}/hold", json={"reason_code": "PATIENT_UNWELL"}
        )
        assert held.status_code == 200
    before = _detail(api, network, therapy["id"])
    refused = _reschedule(api, network[who], therapy["id"], **body)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (status, code), refused.get_json()
    after = _detail(api, network, therapy["id"])
    assert (_open(after), after["status"], after["stage"]) == (_open(before), before["status"], before["stage"])
    assert [b[2] for b in _bookings(api, network, therapy["id"])] == ["booked", "booked"]


def test_the_reschedule_message_is_not_taken_from_integrators(api, network, clock, bundled):
    therapy = run_journey(api, network, clock, "autologous_car_t", SCHEDULED, NETWORK_PARTIES)
    sent = api.as_(network["integrator"]).post(
        "/api/v1/messages",
        json={"name": "therapy.reschedule", "coi": therapy["coi"], "payload": {"reason_code": "PATIENT_REQUEST"}},
    )
    assert sent.status_code == 422 and sent.get_json()["error"]["code"] == "reserved_message"
    assert _open(_detail(api, network, therapy["id"])) == ["Task_Apheresis"]


def test_a_therapy_whose_diagram_has_no_way_back_is_not_sent_back(api, network):
    started = api.as_(network["coord"]).post(
        "/api/v1/therapies", json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-9"}}
    )
    therapy = started.get_json()
    assert therapy["reschedulable"] is False
    refused = _reschedule(api, network["coord"], therapy["id"], reason_code="PATIENT_REQUEST")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_reschedulable"


def _custody(api, world, therapy: dict, material_id: str, legs: list[tuple[str, str]]) -> None:
    for from_party, to_party in legs:
        recorded = api.as_(world["coord"]).post(
            f"/api/v1/therapies/{therapy['id']}/custody",
            json={
                "material_id": material_id,
                "from_party": from_party,
                "to_party": to_party,
                "scanned_coi": therapy["coi"],
            },
        )
        assert recorded.status_code == 201, recorded.get_json()


REJECTED = task(
    "Task_ReceiveAtManufacturing",
    receipt_decision="rejected",
    bags_intact=False,
    rejection_reason="Bag leaking on arrival",
)


def test_rejected_material_is_collected_again_under_the_same_coi(api, network, clock, bundled):
    first = [
        *SCHEDULED,
        task("Task_Apheresis", din=FIRST_DIN),
        message("courier.picked_up", courier="ColdChain", tracking="CC-1"),
        message("shipment.delivered"),
    ]
    therapy = run_journey(api, network, clock, "autologous_car_t", first, NETWORK_PARTIES)
    coi = therapy["coi"]
    _custody(api, network, therapy, FIRST_DIN, [("APH-1", "COURIER-1"), ("COURIER-1", "MFG-2")])
    rejected = take_steps(api, network, clock, therapy, [REJECTED])
    assert _open(rejected) == ["Task_RecollectionDecision"] and rejected["status"] == "active"
    again = take_steps(
        api,
        network,
        clock,
        therapy,
        [
            task("Task_RecollectionDecision", recollection_decision="recollect"),
            task("Task_Scheduling", **_later_slots(api, network)),
            task("Task_Apheresis", din=SECOND_DIN, collection_completed_at="2026-11-27T11:30:00Z"),
        ],
    )
    assert again["coi"] == coi and again["data"]["coi_assignment"]["coi"] == coi
    _custody(api, network, therapy, SECOND_DIN, [("APH-1", "COURIER-1"), ("COURIER-1", "MFG-2")])
    final = take_steps(api, network, clock, therapy, AUTOLOGOUS_HAPPY_PATH[3:])
    assert final["status"] == "completed", final
    record = _record(api, network, therapy["id"])
    assert [(c["number"], c["material_id"], c["outcome"], c["outcome_reason"]) for c in record["collections"]] == [
        (1, FIRST_DIN, "rejected", "Bag leaking on arrival"),
        (2, SECOND_DIN, "accepted", None),
    ]
    assert record["vein_to_vein"]["collection_at"] == "2026-11-27T11:30:00Z"  # the product's own collection
    transfers = record["custody"]["transfers"]
    assert [(t["material_id"], t["to_party"]) for t in transfers] == [
        (FIRST_DIN, "COURIER-1"),
        (FIRST_DIN, "MFG-2"),
        (SECOND_DIN, "COURIER-1"),
        (SECOND_DIN, "MFG-2"),
    ]
    assert record["custody"]["breaks"] == []
    assert sorted(_bookings(api, network, therapy["id"]))[:2] == [
        ("apheresis", "2026-11-24T08:00:00Z", "moved", None),
        ("apheresis", LATER_APHERESIS[0], "booked", "RECOLLECTION"),
    ]
    steps = [s["name"] for s in record["steps"]]
    assert f"Rebooked apheresis at APH-1, {LATER_APHERESIS[0]} (RECOLLECTION)" in steps
    assert sum(1 for s in record["steps"] if s["activity_id"] == "Task_Apheresis") == 2


def test_material_lost_in_transit_is_collected_again(api, network, clock, bundled):
    lost = [
        *SCHEDULED,
        task("Task_Apheresis", din=FIRST_DIN),
        message("courier.picked_up", courier="ColdChain", tracking="CC-1"),
        message("shipment.lost", reason="Shipper damaged"),
    ]
    therapy = run_journey(api, network, clock, "autologous_car_t", lost, NETWORK_PARTIES)
    assert _open(therapy) == ["Task_RecollectionDecision"]
    again = take_steps(
        api,
        network,
        clock,
        therapy,
        [
            task("Task_RecollectionDecision", recollection_decision="recollect"),
            task("Task_Scheduling", **_later_slots(api, network)),
        ],
    )
    assert _open(again) == ["Task_Apheresis"]
    record = _record(api, network, therapy["id"])
    assert [(c["material_id"], c["outcome"]) for c in record["collections"]] == [(FIRST_DIN, "lost")]


# -- on the web pages ---------------------------------------------------------------------------------------
def test_a_coordinator_sends_a_therapy_back_to_scheduling_from_its_page(app, api, network, clock, bundled):
    therapy = run_journey(api, network, clock, "autologous_car_t", SCHEDULED, NETWORK_PARTIES)
    page_path = f"/therapies/{therapy['id']}"
    coordinator = signed_in(app, "coord")
    offered = _section(_text(coordinator, page_path), "reschedule-title")
    assert '<option value="PATIENT_REQUEST">' in offered and '<option value="PATIENT_UNWELL">' not in offered
    assert 'id="reschedule-title"' not in _text(signed_in(app, "apheresis"), page_path)  # collects, does not treat

    refused = _post(coordinator, f"{page_path}/reschedule", page_path, reason_code="OTHER")
    assert "Not sent back to scheduling: With the reason code OTHER, say the reason in 'reason'." in refused
    assert _open(_detail(api, network, therapy["id"])) == ["Task_Apheresis"]

    sent = _post(coordinator, f"{page_path}/reschedule", page_path, reason_code="SITE_CAPACITY", reason="Unit closed")
    assert "The therapy is back at scheduling" in sent
    assert 'id="reschedule-title"' not in sent
    assert "Schedule apheresis and manufacturing slot" in _section(sent, "open-title")
    assert "Sent back to scheduling (SITE_CAPACITY: Unit closed)" in _words(_section(sent, "timeline-title"))


def test_the_therapy_page_lists_each_collection_and_what_became_of_it(app, api, network, clock, bundled):
    steps = [
        *SCHEDULED,
        task("Task_Apheresis", din=FIRST_DIN),
        message("courier.picked_up", courier="ColdChain", tracking="CC-1"),
        message("shipment.delivered"),
        REJECTED,
        task("Task_RecollectionDecision", recollection_decision="recollect"),
    ]
    therapy = run_journey(api, network, clock, "autologous_car_t", steps, NETWORK_PARTIES)
    take_steps(
        api,
        network,
        clock,
        therapy,
        [task("Task_Scheduling", **_later_slots(api, network)), task("Task_Apheresis", din=SECOND_DIN)],
    )
    page = _text(signed_in(app, "coord"), f"/therapies/{therapy['id']}")
    rows = re.findall(r"<tr data-outcome=\"([^\"]+)\">(.*?)</tr>", _section(page, "collections-title"), re.S)
    assert [(outcome, _words(cells)) for outcome, cells in rows] == [
        (
            "rejected",
            f"1{FIRST_DIN} label2026-11-16T12:40:00Zapheresis Rejected at manufacturing (Bag leaking on arrival)",
        ),
        ("on-its-way", f"2{SECOND_DIN} label2026-11-16T12:40:00Zapheresis On its way"),
    ]
