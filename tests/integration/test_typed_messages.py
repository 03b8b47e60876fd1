"""Typed messages: a diagram declares a JSON Schema for a message's payload (``payloadSchema`` on the element that
catches it); a payload that fails it is refused with 422, one error per field, audited, and nothing changes."""

from __future__ import annotations

import io
import json

import jsonschema
from sqlalchemy import func, select

from ..e2e.test_bundled_journeys import run_journey
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from ..support.journeys import task
from .conftest import ROOT

COLLECTED = [task("Task_Enrolment"), task("Task_Scheduling"), task("Task_Apheresis")]
FORMS = ROOT / "forms"

ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ERP order",
    "type": "object",
    "properties": {
        "order": {"type": "string", "minLength": 1, "title": "Order", "description": "The sales order number."},
        "ordered_at": {"type": "string", "format": "date-time", "title": "Ordered at", "description": "When."},
        "doses": {"type": "integer", "minimum": 1, "title": "Doses", "description": "How many doses."},
    },
    "required": ["order"],
    "examples": [{"order": "SO-1001", "ordered_at": "2026-11-23T09:00:00Z", "doses": 1}],
}

ORDER_BPMN = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="Definitions_typed_order" targetNamespace="http://tether.example/bpmn">
  <bpmn:message id="Message_order" name="erp.order.placed"/>
  <bpmn:message id="Message_released" name="mes.lot.released"/>
  <bpmn:process id="typed_order" name="Therapy started by a typed ERP order" isExecutable="true">
    <bpmn:startEvent id="Start_Order" name="Order placed">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="payloadSchema" value="erp-order.message.json"/>
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:outgoing>Flow_1</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="Message_order"/>
    </bpmn:startEvent>
    <bpmn:intermediateCatchEvent id="Event_Released" name="Lot released">
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


def upload(api, token, bpmn: bytes, forms: dict[str, bytes]):
    files = {"bpmn": (io.BytesIO(bpmn), "diagram.bpmn"), "forms": [(io.BytesIO(c), n) for n, c in forms.items()]}
    return api.as_(token).post("/api/v1/process-definitions", data=files, content_type="multipart/form-data")


def post_message(api, world, body: dict):
    return api.as_(world["integrator"]).post("/api/v1/messages", json=body)


def seen(api, world, therapy_id: str) -> dict:
    """What the coordinator sees of the therapy, without the fields every read recomputes."""
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy_id}").get_json()
    return {k: detail[k] for k in ("status", "stage", "waiting_for", "data", "open_tasks")}


def refusals(api, world, therapy_id: str) -> list[dict]:
    items = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy_id}&limit=500").get_json()["items"]
    return [e for e in items if e["action"] == "message.refused"]


def therapy_count(app) -> int:
    from server.store.extensions import db
    from server.store.models import Therapy

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(Therapy)).scalar()


def test_a_payload_failing_its_schema_is_refused_per_field_audited_and_changes_nothing(api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", COLLECTED)
    assert [w["name"] for w in therapy["waiting_for"] if w["type"] == "message"] == ["courier.picked_up"]
    before = seen(api, world, therapy["id"])
    body = {"name": "courier.picked_up", "coi": therapy["coi"]}

    refused = post_message(api, world, {**body, "payload": {"courier": 7, "picked_up_at": "yesterday"}})
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "invalid_payload" and "courier-picked-up.message.json" in error["message"]
    details = error["details"]
    assert (details["name"], details["activity_id"], details["schema"]) == (
        "courier.picked_up",
        "Event_CourierPickedUp",
        "courier-picked-up.message.json",
    )
    assert [e["field"] for e in details["errors"]] == ["payload.courier", "payload.picked_up_at", "payload.tracking"]
    messages = {e["field"]: e["message"] for e in details["errors"]}
    assert "is not of type 'string'" in messages["payload.courier"]
    assert "is not a 'date-time'" in messages["payload.picked_up_at"]
    assert "'tracking' is a required property" == messages["payload.tracking"]
    assert details["fields"] == messages
    assert seen(api, world, therapy["id"]) == before, "the therapy still waits, its data untouched"

    [audited] = refusals(api, world, therapy["id"])
    assert audited["actor"] == "integrator" and audited["data"]["reason"] == "invalid_payload"
    assert audited["data"]["status"] == 422 and audited["data"]["code"] == "invalid_payload"
    assert audited["data"]["errors"] == details["errors"]
    assert audited["data"]["payload"] == {"courier": 7, "picked_up_at": "yesterday"}

    not_an_object = post_message(api, world, {**body, "payload": ["CC-1"]})
    assert not_an_object.status_code == 422
    assert [e["field"] for e in not_an_object.get_json()["error"]["details"]["errors"]] == ["payload"]
    assert post_message(api, world, body).status_code == 422, "no payload is an empty one: the tracking is missing"
    assert seen(api, world, therapy["id"]) == before and len(refusals(api, world, therapy["id"])) == 3

    payload = {"courier": "ColdChain", "tracking": "CC-1", "picked_up_at": "2026-11-24T13:05:00Z", "extra": [1]}
    delivered = post_message(api, world, {**body, "payload": payload})
    assert delivered.status_code == 200, delivered.get_json()
    assert delivered.get_json()["activity_id"] == "Event_CourierPickedUp"
    after = seen(api, world, therapy["id"])
    assert after["data"]["courier_pickup"] == payload, "fields beyond the schema's are kept as sent"
    assert "shipment.delivered" in [w.get("name") for w in after["waiting_for"]]


def test_a_message_without_a_declared_schema_is_taken_as_before(api, world):
    from ..support.journeys import enrol, start

    therapy = start(api, world["coord"])
    enrol(api, world, therapy)
    sent = post_message(api, world, {"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": [1, "x"]})
    assert sent.status_code == 200, sent.get_json()


def test_a_held_therapy_refuses_an_invalid_payload_and_keeps_a_valid_one(api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", COLLECTED)
    held = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{therapy['id']}/hold", json={"reason_code": "PATIENT_UNWELL"}
    )
    assert held.status_code == 200, held.get_json()
    body = {"name": "courier.picked_up", "therapy_id": therapy["id"]}
    refused = post_message(api, world, {**body, "payload": {"courier": "ColdChain"}})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"]["errors"] == [
        {"field": "payload.tracking", "message": "'tracking' is a required property"}
    ]
    [audited] = refusals(api, world, therapy["id"])
    assert audited["data"]["reason"] == "invalid_payload"
    actions = [
        e["action"]
        for e in api.as_(world["auditor"])
        .get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500")
        .get_json()["items"]
    ]
    assert "message.held" not in actions, "an invalid payload is not kept for the resume"

    kept = post_message(api, world, {**body, "payload": {"courier": "ColdChain", "tracking": "CC-1"}})
    assert kept.status_code == 202 and kept.get_json()["held"] is True
    resumed = api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/resume", json={})
    assert resumed.status_code == 200, resumed.get_json()
    after = seen(api, world, therapy["id"])
    assert after["data"]["courier_pickup"] == {"courier": "ColdChain", "tracking": "CC-1"}


def test_a_message_start_event_checks_the_payload_before_starting_anything(app, api, world):
    forms = {"erp-order.message.json": json.dumps(ORDER_SCHEMA).encode()}
    deployed = upload(api, world["designer"], ORDER_BPMN, forms)
    assert deployed.status_code == 201, deployed.get_json()
    order = {"name": "erp.order.placed", "site": "SITE-A", "patient": {"reference": "PT-90"}}
    count = therapy_count(app)

    refused = post_message(api, world, {**order, "payload": {"doses": 0, "ordered_at": "2026-13-01"}})
    assert refused.status_code == 422, refused.get_json()
    details = refused.get_json()["error"]["details"]
    assert details["activity_id"] == "Start_Order" and details["schema"] == "erp-order.message.json"
    assert [e["field"] for e in details["errors"]] == ["payload.doses", "payload.order", "payload.ordered_at"]
    assert therapy_count(app) == count, "no therapy was created"
    items = api.as_(world["auditor"]).get("/api/v1/audit?limit=500").get_json()["items"]
    [audited] = [e for e in items if e["action"] == "message.refused"]
    assert (audited["subject_type"], audited["subject_id"]) == ("process_definition", deployed.get_json()["id"])
    assert audited["data"]["reason"] == "invalid_payload" and audited["data"]["name"] == "erp.order.placed"

    started = post_message(api, world, {**order, "payload": ORDER_SCHEMA["examples"][0]})
    assert started.status_code == 201, started.get_json()
    assert started.get_json()["activity_id"] == "Start_Order" and therapy_count(app) == count + 1


def test_a_diagram_naming_an_unknown_payload_schema_is_refused_with_element_and_line(api, world):
    refused = upload(api, world["designer"], ORDER_BPMN, {})
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert "erp-order.message.json" in error["message"] and "forms/" in error["message"]
    assert error["details"]["element_id"] == "Start_Order"
    assert (
        error["details"]["line"]
        == ORDER_BPMN.decode().splitlines().index('    <bpmn:startEvent id="Start_Order" name="Order placed">') + 1
    )


def test_the_messages_of_a_version_are_listed_with_their_schemas(api, world, bundled):
    listed = api.as_(world["auditor"]).get("/api/v1/process-definitions/autologous_car_t/messages")
    assert listed.status_code == 200, listed.get_json()
    body = listed.get_json()
    assert (body["key"], body["version"]) == ("autologous_car_t", bundled["autologous_car_t"])
    pairs = [(item["name"], item["activity_id"]) for item in body["items"]]
    assert pairs[:3] == [
        ("therapy.reschedule", "Event_RescheduleRequested"),
        ("courier.picked_up", "Event_CourierPickedUp"),
        ("shipment.delivered", "Task_AwaitFreshDelivery"),
    ]
    assert ("return.delivered", "Task_AwaitQuarantinedDelivery") in pairs
    by_activity = {item["activity_id"]: item for item in body["items"]}
    pickup = by_activity["Event_CourierPickedUp"]
    assert pickup["schema_file"] == "courier-picked-up.message.json" and pickup["starts_therapy"] is False
    assert pickup["schema"] == json.loads((FORMS / "courier-picked-up.message.json").read_text())
    assert pickup["activity_name"] == "Courier picked up fresh material"
    reschedule = by_activity["Event_RescheduleRequested"]
    assert reschedule["schema"] is None and reschedule["schema_file"] is None, "the server sends it itself"
    assert all(item["schema"] for item in body["items"] if item["name"] != "therapy.reschedule")

    mini = api.as_(world["coord"]).get("/api/v1/process-definitions/mini_therapy/messages?version=1").get_json()
    assert mini["items"] == [
        {
            "name": "shipment.delivered",
            "activity_id": "Event_Delivered",
            "activity_name": "Shipment delivered",
            "starts_therapy": False,
            "schema_file": None,
            "schema": None,
        }
    ]
    for path, status in (
        ("/api/v1/process-definitions/mini_therapy/messages?version=9", 404),
        ("/api/v1/process-definitions/nope/messages", 404),
        ("/api/v1/process-definitions/mini_therapy/messages?version=x", 400),
    ):
        assert api.as_(world["coord"]).get(path).status_code == status, path
    assert api.get("/api/v1/process-definitions/mini_therapy/messages").status_code == 401


def test_a_start_message_is_listed_as_starting_a_therapy(api, world):
    forms = {"erp-order.message.json": json.dumps(ORDER_SCHEMA).encode()}
    assert upload(api, world["designer"], ORDER_BPMN, forms).status_code == 201
    items = api.as_(world["integrator"]).get("/api/v1/process-definitions/typed_order/messages").get_json()["items"]
    assert [(i["name"], i["starts_therapy"], i["schema_file"]) for i in items] == [
        ("erp.order.placed", True, "erp-order.message.json"),
        ("mes.lot.released", False, None),
    ]
    assert items[0]["schema"] == ORDER_SCHEMA


def test_the_excursion_tether_sends_itself_fits_the_bundled_schema(app, api, world, clock, bundled):
    """Tether delivers ``condition.excursion`` itself (a reading out of range); what it sends is what the bundled
    schema describes."""
    up_to_return = AUTOLOGOUS_HAPPY_PATH[
        : AUTOLOGOUS_HAPPY_PATH.index(("message", "return.delivered", {"delivered_to": "SITE-A"}))
    ]
    therapy = run_journey(api, world, clock, "autologous_car_t", up_to_return)
    assert "condition.excursion" in [w.get("name") for w in therapy["waiting_for"]]
    reading = {"sensor_id": "LOGGER-7", "temperature_c": -131.0, "recorded_at": "2026-11-23T09:00:00Z"}
    sent = api.as_(world["integrator"]).post(f"/api/v1/therapies/{therapy['id']}/conditions", json=reading)
    assert sent.status_code == 201 and sent.get_json()["excursion"] is True, sent.get_json()
    after = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert "condition.excursion" not in [w.get("name") for w in after["waiting_for"]], "the process took it"
    schema = json.loads((FORMS / "condition-excursion.message.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert list(validator.iter_errors(after["data"]["excursion"])) == []
