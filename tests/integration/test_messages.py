"""Inbound messages: to a waiting therapy by id or COI, refused when not awaited, idempotent, and message starts."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from ..support.journeys import ENROLMENT, complete, enrol, only_task, start

ORDER_BPMN = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_order"
                  targetNamespace="http://tether.example/bpmn">
  <bpmn:message id="Message_order" name="erp.order.received"/>
  <bpmn:message id="Message_released" name="mes.batch.released"/>
  <bpmn:process id="ordered_therapy" name="Therapy started by an ERP order" isExecutable="true">
    <bpmn:startEvent id="Start_Order" name="Order received">
      <bpmn:outgoing>Flow_1</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="Message_order"/>
    </bpmn:startEvent>
    <bpmn:intermediateCatchEvent id="Event_Released" name="Batch released">
      <bpmn:incoming>Flow_1</bpmn:incoming>
      <bpmn:outgoing>Flow_2</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="Message_released"/>
    </bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="End_Done" name="Done">
      <bpmn:incoming>Flow_2</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_Order" targetRef="Event_Released"/>
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Event_Released" targetRef="End_Done"/>
  </bpmn:process>
</bpmn:definitions>
"""


def counts(app):
    """How many audit entries, outbox events and therapies there are."""
    from server.store.extensions import db
    from server.store.models import AuditEntry, OutboxEvent, Therapy

    with app.app_context():
        return tuple(
            db.session.execute(select(func.count()).select_from(model)).scalar()
            for model in (AuditEntry, OutboxEvent, Therapy)
        )


def test_a_message_reaches_the_therapy_by_coi_in_any_printed_form_and_its_payload_lands(api, world):
    from engine.coi import parse_coi

    for form in ("plain", "eye-readable", "barcode"):
        therapy = start(api, world["coord"])
        enrol(api, world, therapy)
        coi = parse_coi(therapy["coi"])
        named = {"plain": coi.value, "eye-readable": coi.eye_readable, "barcode": "&/" + coi.value}[form]
        posted = api.as_(world["integrator"]).post(
            "/api/v1/messages",
            json={"name": "shipment.delivered", "coi": named, "payload": {"carrier": "ColdChain", "dock": 3}},
        )
        assert posted.status_code == 200, (form, posted.get_json())
        assert posted.get_json() | {"stage": None} == {
            "delivered": True,
            "therapy_id": therapy["id"],
            "activity_id": "Event_Delivered",
            "status": "active",
            "stage": None,
        }
        detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
        assert detail["data"]["shipment.delivered"] == {"carrier": "ColdChain", "dock": 3}
        assert [t["name"] for t in detail["open_tasks"]] == ["Receive shipment"]


def test_a_message_for_a_therapy_that_is_not_waiting_is_refused_audited_and_changes_nothing(api, world, app):
    therapy = start(api, world["coord"])
    before = counts(app)
    refused = api.as_(world["integrator"]).post(
        "/api/v1/messages", json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"dock": 1}}
    )
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_waiting"
    audit_entries, events, therapies = counts(app)
    assert (audit_entries, events, therapies) == (before[0] + 1, before[1], before[2])
    [last] = (
        api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()["items"][-1:]
    )
    assert last["action"] == "message.refused" and last["data"]["name"] == "shipment.delivered"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert "shipment.delivered" not in detail["data"] and detail["stage"] == "Enrol patient"

    assert (
        api.as_(world["integrator"])
        .post("/api/v1/messages", json={"name": "shipment.delivered", "therapy_id": "no-such-therapy"})
        .status_code
        == 404
    )
    assert (
        api.as_(world["integrator"])
        .post("/api/v1/messages", json={"name": "shipment.delivered", "coi": "CHW12342699ZZZZ"})
        .status_code
        == 404
    )
    assert (
        api.as_(world["logistics"])
        .post(
            "/api/v1/messages",
            json={  # another site's therapy does not exist
                "name": "shipment.delivered",
                "therapy_id": start(api, world["coordb"], site="SITE-B")["id"],
            },
        )
        .status_code
        == 404
    )
    both = api.as_(world["integrator"]).post(
        "/api/v1/messages", json={"name": "x", "therapy_id": therapy["id"], "coi": therapy["coi"]}
    )
    assert both.status_code == 422 and both.get_json()["error"]["details"]["field"] == "therapy_id"


def test_a_replayed_message_or_task_completion_returns_the_first_answer_and_does_nothing_again(
    api, world, app, database_url
):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    completion = {"data": ENROLMENT}
    key = {"Idempotency-Key": "enrol-PT-1"}
    first = api.as_(world["coord"]).post(f"/api/v1/tasks/{task['id']}/complete", json=completion, headers=key)
    assert first.status_code == 200
    after_first = counts(app)
    again = api.as_(world["coord"]).post(f"/api/v1/tasks/{task['id']}/complete", json=completion, headers=key)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and counts(app) == after_first
    without_key = complete(api, world["coord"], task["id"], ENROLMENT)
    assert without_key.status_code == 409  # a second completion without the key is refused, as it should be

    message = {"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"dock": 3}}
    key = {"Idempotency-Key": "courier-7781-delivered"}
    first = api.as_(world["integrator"]).post("/api/v1/messages", json=message, headers=key)
    assert first.status_code == 200 and first.get_json()["delivered"] is True
    after_first = counts(app)
    again = api.as_(world["integrator"]).post("/api/v1/messages", json=message, headers=key)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and counts(app) == after_first

    from server import create_app

    restarted = create_app(
        {"DATABASE_URL": database_url, "SCHEDULER": False, "SECRET_KEY": "test-secret", "TESTING": True}
    )
    headers = {**key, "Authorization": f"Bearer {world['integrator']}"}
    replay = restarted.test_client().post("/api/v1/messages", json=message, headers=headers)
    assert replay.status_code == 200 and replay.get_json() == first.get_json()
    assert counts(app) == after_first
    with restarted.app_context():
        from server.store.extensions import db

        db.engine.dispose()


def deploy_order_process(api, world):
    """Deploy the process that an ERP order message starts."""
    answer = api.as_(world["designer"]).post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(ORDER_BPMN), "ordered.bpmn")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201, answer.get_json()


def test_a_message_start_event_starts_a_therapy_for_the_named_site_and_patient(api, world, app):
    deploy_order_process(api, world)
    order = {
        "name": "erp.order.received",
        "site": "SITE-A",
        "patient": {"reference": "PT-77"},
        "payload": {"order": "SO-1001", "product": "CAR-T"},
    }
    started = api.as_(world["integrator"]).post("/api/v1/messages", json=order, headers={"Idempotency-Key": "so-1001"})
    assert started.status_code == 201, started.get_json()
    body = started.get_json()
    assert body["started"] is True and body["delivered"] is True and body["activity_id"] == "Start_Order"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{body['therapy_id']}").get_json()
    assert detail["process"]["key"] == "ordered_therapy" and detail["site"] == "SITE-A"
    assert detail["patient"] == {"reference": "PT-77"} and detail["coi"] == body["coi"]
    assert detail["data"]["erp.order.received"] == {"order": "SO-1001", "product": "CAR-T"}
    assert detail["waiting_for"] == [{"type": "message", "activity_id": "Event_Released", "name": "mes.batch.released"}]
    replay = api.as_(world["integrator"]).post("/api/v1/messages", json=order, headers={"Idempotency-Key": "so-1001"})
    assert replay.get_json() == body
    assert (
        api.as_(world["integrator"]).get("/api/v1/therapies?process_key=ordered_therapy").get_json()["items"][0]["id"]
        == body["therapy_id"]
    )
    assert (
        len(api.as_(world["integrator"]).get("/api/v1/therapies?process_key=ordered_therapy").get_json()["items"]) == 1
    )

    released = api.as_(world["integrator"]).post(
        "/api/v1/messages", json={"name": "mes.batch.released", "coi": body["coi"], "payload": {"batch": "B-9"}}
    )
    assert released.status_code == 200 and released.get_json()["status"] == "completed"
    actions = [
        e["action"]
        for e in api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={body['therapy_id']}").get_json()["items"]
    ]
    assert actions.index("therapy.started") < actions.index("message.received") < actions.index("therapy.completed")

    in_payload = api.as_(world["coordb"]).post(
        "/api/v1/messages",
        json={"name": "erp.order.received", "payload": {"site": "SITE-B", "patient": {"reference": "PT-78"}}},
    )
    assert (
        in_payload.status_code == 201
        and api.as_(world["coordb"]).get(f"/api/v1/therapies/{in_payload.get_json()['therapy_id']}").get_json()["site"]
        == "SITE-B"
    )


def test_a_start_message_without_site_or_patient_or_by_the_wrong_caller_is_refused(api, world, app):
    deploy_order_process(api, world)
    before = counts(app)
    integrator = api.as_(world["integrator"])
    cases = [
        ({"name": "erp.order.received", "patient": {"reference": "PT-1"}}, 422, "site"),
        ({"name": "erp.order.received", "site": "SITE-A"}, 422, "patient.reference"),
        ({"name": "erp.order.received", "site": "NOWHERE", "patient": {"reference": "PT-1"}}, 422, "site"),
        ({"name": "nobody.starts.on.this", "site": "SITE-A", "patient": {"reference": "PT-1"}}, 422, "therapy_id"),
        (
            {
                "name": "erp.order.received",
                "process_key": "mini_therapy",
                "site": "SITE-A",
                "patient": {"reference": "PT-1"},
            },
            422,
            "therapy_id",
        ),
    ]
    for body, status, field in cases:
        answer = integrator.post("/api/v1/messages", json=body)
        assert answer.status_code == status, (body, answer.get_json())
        assert answer.get_json()["error"]["details"]["field"] == field, body
    order = {"name": "erp.order.received", "site": "SITE-A", "patient": {"reference": "PT-1"}}
    assert api.as_(world["logistics"]).post("/api/v1/messages", json=order).status_code == 403
    assert api.as_(world["coordb"]).post("/api/v1/messages", json=order).status_code == 403
    assert counts(app)[1:] == before[1:]  # no event, no therapy
