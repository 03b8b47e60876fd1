"""The therapy network: parties chosen at start or later, tasks routed to their party's site, visibility by
party, the patient reference on a need-to-know basis, reassignment with reason codes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import AuditEntry, OutboxEvent, TaskRecord

from ..support.journeys import complete, fire, tasks_of

NETWORK = {"manufacturing": "MFG-1", "logistics": "COURIER-1"}


def _start(api, token, parties=NETWORK, **extra):
    body = {"process_key": "network_therapy", "site": "SITE-A", "patient": {"reference": "PT-NET-1"}, **extra}
    if parties is not None:
        body["parties"] = parties
    return api.as_(token).post("/api/v1/therapies", json=body)


def _enrolled(api, network, parties=NETWORK) -> dict:
    started = _start(api, network["coord"], parties)
    assert started.status_code == 201, started.get_json()
    therapy = started.get_json()
    (enrol,) = tasks_of(api, network["coord"], therapy["id"])
    assert complete(api, network["coord"], enrol["id"], {}).status_code == 200
    return therapy


def _therapy(api, token, therapy_id):
    return api.as_(token).get(f"/api/v1/therapies/{therapy_id}")


def test_each_party_works_its_own_tasks_and_sees_only_its_own_therapies(api, network):
    therapy = _enrolled(api, network)
    assert therapy["parties"] == {
        "treatment": "SITE-A",
        "apheresis": "SITE-A",
        "manufacturing": "MFG-1",
        "logistics": "COURIER-1",
    }
    (task,) = tasks_of(api, network["mfg1"], therapy["id"])
    assert (task["name"], task["party"], task["site"]) == ("Manufacture the batch", "manufacturing", "MFG-1")
    assert [t["therapy_id"] for t in api.as_(network["mfg1"]).get("/api/v1/tasks").get_json()["items"]] == [
        therapy["id"]
    ]
    # MFG-2 takes no part: the therapy, its task and its list entry do not exist for its maker.
    assert _therapy(api, network["mfg2"], therapy["id"]).status_code == 404
    assert api.as_(network["mfg2"]).get(f"/api/v1/tasks/{task['id']}").status_code == 404
    assert api.as_(network["mfg2"]).get("/api/v1/therapies").get_json()["items"] == []
    assert api.as_(network["mfg2"]).get("/api/v1/tasks").get_json()["items"] == []
    # The courier has nothing to do yet, but sees the therapy it will ship.
    assert tasks_of(api, network["courier"], therapy["id"]) == []
    assert _therapy(api, network["courier"], therapy["id"]).status_code == 200
    done = complete(api, network["mfg1"], task["id"], {})
    assert done.status_code == 200, done.get_json()
    (ship,) = tasks_of(api, network["courier"], therapy["id"])
    assert (ship["party"], ship["site"]) == ("logistics", "COURIER-1")
    assert complete(api, network["courier"], ship["id"], {}).status_code == 200
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["status"] == "completed"


def test_the_patient_reference_is_shown_only_to_those_who_need_to_know_it(api, network):
    therapy = _enrolled(api, network)
    assert therapy["patient"] == {"reference": "PT-NET-1"}  # the treatment centre's coordinator
    for name in ("admin", "auditor"):
        assert _therapy(api, network[name], therapy["id"]).get_json()["patient"] == {"reference": "PT-NET-1"}
    for name in ("mfg1", "courier"):
        assert _therapy(api, network[name], therapy["id"]).get_json()["patient"] is None
        listed = api.as_(network[name]).get("/api/v1/therapies").get_json()["items"]
        assert [t["patient"] for t in listed] == [None]
    (task,) = tasks_of(api, network["mfg1"], therapy["id"])
    answer = complete(api, network["mfg1"], task["id"], {}).get_json()
    assert answer["therapy"]["patient"] is None and "PT-NET-1" not in str(answer)


def test_a_task_of_a_party_without_a_site_waits_until_the_centre_names_one(app, api, network):
    therapy = _enrolled(api, network, parties={"logistics": "COURIER-1"})
    assert therapy["parties"]["manufacturing"] is None
    (task,) = _therapy(api, network["coord"], therapy["id"]).get_json()["open_tasks"]
    assert (task["party"], task["site"]) == ("manufacturing", None)
    assert tasks_of(api, network["mfg1"], therapy["id"]) == []
    refused = complete(api, network["maker"], task["id"], {})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "party_unassigned"
    assert "no manufacturing site yet" in refused.get_json()["error"]["message"]
    named = api.as_(network["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/parties", json={"manufacturing": "MFG-1", "reason_code": "CAPACITY"}
    )
    assert named.status_code == 200, named.get_json()
    assert named.get_json()["parties"]["manufacturing"] == "MFG-1"
    (moved,) = tasks_of(api, network["mfg1"], therapy["id"])
    assert (moved["id"], moved["site"]) == (task["id"], "MFG-1")
    assert complete(api, network["mfg1"], task["id"], {}).status_code == 200


def test_reassignment_mid_journey_moves_the_open_task_with_audit_and_event(app, api, network):
    therapy = _enrolled(api, network)
    (task,) = tasks_of(api, network["mfg1"], therapy["id"])
    moved = api.as_(network["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/parties",
        json={"manufacturing": "MFG-2", "reason_code": "equipment_failure", "reason": "Incubator down"},
    )
    assert moved.status_code == 200, moved.get_json()
    assert moved.get_json()["parties"]["manufacturing"] == "MFG-2"
    assert _therapy(api, network["mfg1"], therapy["id"]).status_code == 404
    (now_at_mfg2,) = tasks_of(api, network["mfg2"], therapy["id"])
    assert (now_at_mfg2["id"], now_at_mfg2["site"]) == (task["id"], "MFG-2")
    with app.app_context():
        entry = db.session.execute(
            select(AuditEntry).where(AuditEntry.action == "therapy.parties_changed")
        ).scalar_one()
        assert entry.actor == "coord" and entry.reason == "Incubator down"
        assert entry.data["reason_code"] == "EQUIPMENT_FAILURE"
        assert entry.data["changes"] == {"manufacturing": {"from": "MFG-1", "to": "MFG-2"}}
        event = db.session.execute(
            select(OutboxEvent).where(OutboxEvent.type == "therapy.parties_changed")
        ).scalar_one()
        assert event.data["parties"]["manufacturing"] == "MFG-2"
    assert complete(api, network["mfg2"], task["id"], {}).status_code == 200


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("coord", {"manufacturing": "MFG-9", "reason_code": "CAPACITY"}, 422, "unknown_site"),
        ("coord", {"manufacturing": "SITE-B", "reason_code": "CAPACITY"}, 422, "wrong_site_kind"),
        ("coord", {"manufacturing": "MFG-1", "reason_code": "CAPACITY"}, 422, "no_change"),
        ("coord", {"manufacturing": "MFG-2", "reason_code": "NO_SUCH_REASON"}, 422, "unknown_reason_code"),
        ("coord", {"manufacturing": "MFG-2", "reason_code": "OTHER"}, 422, "reason_required"),
        ("coord", {"treatment": "SITE-B", "reason_code": "CAPACITY"}, 422, "invalid_request"),
        ("coord", {"reason_code": "CAPACITY"}, 422, "invalid_request"),
        ("apheresis", {"manufacturing": "MFG-2", "reason_code": "CAPACITY"}, 403, "forbidden"),
        ("coordb", {"manufacturing": "MFG-2", "reason_code": "CAPACITY"}, 404, "not_found"),
        ("mfg1", {"manufacturing": "MFG-2", "reason_code": "CAPACITY"}, 403, "forbidden"),
    ],
)
def test_a_wrong_reassignment_is_refused_and_changes_nothing(app, api, network, who, body, status, code):
    therapy = _enrolled(api, network | {}, parties={**NETWORK, "apheresis": "APH-1"})
    refused = api.as_(network[who]).post(f"/api/v1/therapies/{therapy['id']}/parties", json=body)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (status, code), refused.get_json()
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["parties"]["manufacturing"] == "MFG-1"
    with app.app_context():
        (task,) = db.session.execute(select(TaskRecord).where(TaskRecord.status == "ready")).scalars()
        assert task.site.code == "MFG-1"


@pytest.mark.parametrize(
    ("parties", "field", "code"),
    [
        ({"manufacturing": "SITE-B"}, "parties.manufacturing", "wrong_site_kind"),
        ({"logistics": "NOWHERE"}, "parties.logistics", "unknown_site"),
        ({"apheresis": "MFG-1"}, "parties.apheresis", "wrong_site_kind"),
        ({"treatment": "SITE-B"}, "parties.treatment", "invalid_request"),
    ],
)
def test_a_therapy_started_with_a_wrong_party_is_refused_naming_it(app, api, network, parties, field, code):
    refused = _start(api, network["coord"], parties)
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert (error["code"], error["details"]["field"]) == (code, field)
    assert api.as_(network["admin"]).get("/api/v1/therapies").get_json()["items"] == []


def test_a_therapy_starts_only_at_a_treatment_centre(api, network):
    refused = api.as_(network["admin"]).post(
        "/api/v1/therapies",
        json={"process_key": "network_therapy", "site": "MFG-1", "patient": {"reference": "PT-X"}},
    )
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "wrong_site_kind"


def test_lists_filter_by_the_site_of_a_party(api, network):
    first = _enrolled(api, network)
    second = _start(api, network["coord"], {"manufacturing": "MFG-2"}).get_json()
    by_maker = api.as_(network["admin"]).get("/api/v1/therapies?manufacturing=MFG-2").get_json()["items"]
    assert [t["id"] for t in by_maker] == [second["id"]]
    by_courier = api.as_(network["admin"]).get("/api/v1/therapies?logistics=COURIER-1").get_json()["items"]
    assert [t["id"] for t in by_courier] == [first["id"]]
    third = _start(api, network["coord"], {"apheresis": "APH-1"}).get_json()
    at_centre = api.as_(network["admin"]).get("/api/v1/therapies?apheresis=SITE-A").get_json()["items"]
    assert {t["id"] for t in at_centre} == {first["id"], second["id"]}  # collected where they are treated
    at_aph = api.as_(network["admin"]).get("/api/v1/therapies?apheresis=APH-1").get_json()["items"]
    assert [t["id"] for t in at_aph] == [third["id"]]


def test_reason_codes_are_master_data_used_by_cancellation(app, api, network):
    cancel = api.as_(network["coord"]).get("/api/v1/reason-codes?kind=cancel").get_json()["items"]
    assert "OTHER" in {c["code"] for c in cancel} and {c["kind"] for c in cancel} == {"cancel"}
    assert api.as_(network["coord"]).get("/api/v1/reason-codes?kind=nonsense").status_code == 422
    new = {"code": "donor_unavailable", "kind": "cancel", "description": "The donor cannot give cells"}
    assert api.as_(network["coord"]).post("/api/v1/reason-codes", json=new).status_code == 403
    added = api.as_(network["admin"]).post("/api/v1/reason-codes", json=new)
    assert added.status_code == 201 and added.get_json()["code"] == "DONOR_UNAVAILABLE"
    again = api.as_(network["admin"]).post("/api/v1/reason-codes", json=new)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "reason_code_exists"
    therapy = _start(api, network["coord"]).get_json()
    url = f"/api/v1/therapies/{therapy['id']}/cancel"
    unknown = api.as_(network["coord"]).post(url, json={"reason_code": "BORED"})
    assert unknown.status_code == 422 and unknown.get_json()["error"]["code"] == "unknown_reason_code"
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["status"] == "active"
    cancelled = api.as_(network["coord"]).post(url, json={"reason_code": "DONOR_UNAVAILABLE"})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    with app.app_context():
        event = db.session.execute(select(OutboxEvent).where(OutboxEvent.type == "therapy.cancelled")).scalar_one()
        assert event.data["reason_code"] == "DONOR_UNAVAILABLE"


def test_only_the_treatment_centre_cancels(api, network):
    therapy = _start(api, network["coord"], {**NETWORK, "apheresis": "APH-1"}).get_json()
    refused = api.as_(network["apheresis"]).post(
        f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "Not ours to cancel"}
    )
    assert refused.status_code == 403
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["status"] == "active"


def test_a_late_task_wakes_its_role_at_its_party_site_and_a_planner_there_may_hand_it_on(app, api, network, clock):
    therapy = _enrolled(api, network)
    clock.advance(days=15)
    assert fire(app, therapy["id"])
    (alert,) = api.as_(network["mfg1"]).get(f"/api/v1/alerts?therapy_id={therapy['id']}").get_json()["items"]
    assert (alert["kind"], alert["role"]) == ("escalation", "manufacturing")
    assert "the manufacturing role at MFG-1" in alert["message"]
    assert api.as_(network["mfg2"]).get("/api/v1/alerts").get_json()["items"] == []
    moved = api.as_(network["planner1"]).post(
        f"/api/v1/therapies/{therapy['id']}/parties", json={"manufacturing": "MFG-2", "reason_code": "CAPACITY"}
    )
    assert moved.status_code == 200, moved.get_json()
    assert [t["site"] for t in tasks_of(api, network["mfg2"], therapy["id"])] == ["MFG-2"]


def test_a_handoff_names_the_parties_by_their_sites(api, network):
    therapy = _enrolled(api, network)
    url = f"/api/v1/therapies/{therapy['id']}/custody"
    handoff = {"material_id": "BAG-1", "scanned_coi": therapy["coi"]}
    by_party = api.as_(network["courier"]).post(
        url, json={**handoff, "from_party": "manufacturing", "to_party": "logistics"}
    )
    assert by_party.status_code == 201, by_party.get_json()
    assert (by_party.get_json()["from_party"], by_party.get_json()["to_party"]) == ("MFG-1", "COURIER-1")
    free_text = api.as_(network["courier"]).post(url, json={**handoff, "from_party": "courier-1", "to_party": "Ward 3"})
    assert (free_text.get_json()["from_party"], free_text.get_json()["to_party"]) == ("COURIER-1", "Ward 3")
    outsider = api.as_(network["courier"]).post(url, json={**handoff, "from_party": "COURIER-1", "to_party": "MFG-2"})
    assert outsider.status_code == 422 and outsider.get_json()["error"]["code"] == "not_a_party"
    chain = api.as_(network["coord"]).get(url).get_json()["items"]
    assert [(t["from_party"], t["to_party"]) for t in chain] == [("MFG-1", "COURIER-1"), ("COURIER-1", "Ward 3")]


def test_the_record_and_the_detail_name_the_parties_and_the_detail_its_bookings(api, network):
    therapy = _enrolled(api, network)
    record = api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_json()
    assert record["therapy"]["parties"]["manufacturing"] == "MFG-1"
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["bookings"] == []


def test_an_administrator_retires_a_reason_code_and_brings_it_back(api, network):
    url = "/api/v1/reason-codes/reassign/capacity"
    assert api.as_(network["coord"]).patch(url, json={"active": False}).status_code == 403
    retired = api.as_(network["admin"]).patch(url, json={"active": False, "description": "No capacity left"})
    assert retired.status_code == 200 and retired.get_json() == {
        "code": "CAPACITY",
        "kind": "reassign",
        "description": "No capacity left",
        "active": False,
    }
    offered = api.as_(network["coord"]).get("/api/v1/reason-codes?kind=reassign").get_json()["items"]
    assert "CAPACITY" not in {c["code"] for c in offered}
    everything = api.as_(network["admin"]).get("/api/v1/reason-codes?kind=reassign&all=true").get_json()["items"]
    assert "CAPACITY" in {c["code"] for c in everything}
    therapy = _enrolled(api, network)
    body = {"manufacturing": "MFG-2", "reason_code": "CAPACITY"}
    refused = api.as_(network["coord"]).post(f"/api/v1/therapies/{therapy['id']}/parties", json=body)
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "unknown_reason_code"
    assert api.as_(network["admin"]).patch(url, json={"active": True}).status_code == 200
    moved = api.as_(network["coord"]).post(f"/api/v1/therapies/{therapy['id']}/parties", json=body)
    assert moved.status_code == 200
    assert api.as_(network["admin"]).patch("/api/v1/reason-codes/reassign/nope", json={}).status_code == 404
