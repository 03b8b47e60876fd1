"""Collaborations through the API: a file whose partner pools are drawn only to be read deploys its executable
pool; a file with two executable pools, or a construct Tether cannot run, is refused with 422 naming the element
and line, and deploys nothing."""

from __future__ import annotations

import io

from ..conftest import FIXTURES
from ..support.journeys import deliver, only_task, start
from .test_bad_input import counts, refused


def _upload(api, token, path):
    data = {"bpmn": (io.BytesIO(path.read_bytes()), path.name)}
    return api.as_(token).post("/api/v1/process-definitions", content_type="multipart/form-data", data=data)


def test_a_partner_pool_drawn_for_reading_does_not_block_the_executable_one(api, world):
    answer = _upload(api, world["designer"], FIXTURES / "collaboration.bpmn")
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["key"] == "clinic_shipment"
    therapy = start(api, world["coord"], "clinic_shipment")
    assert only_task(api, world["coord"], therapy["id"])["activity_id"] == "Task_Order"


def test_two_executable_pools_and_unsupported_constructs_are_refused_and_deploy_nothing(app, api, world):
    before = counts(app)
    error = refused(_upload(api, world["designer"], FIXTURES / "collaboration-two-pools.bpmn"), 422)
    assert error["details"]["element_id"] == "Participant_Courier" and error["details"]["line"] == 8
    assert "one file per executable pool" in error["message"] and "POST /api/v1/messages" in error["message"]
    error = refused(_upload(api, world["designer"], FIXTURES / "coverage" / "ad-hoc-subprocess.bpmn"), 422)
    assert error["details"]["element_id"] == "Ad" and error["details"]["line"] == 5 and "Change it:" in error["message"]
    assert counts(app) == before


def test_an_event_based_gateway_waits_for_a_message_posted_through_the_api(api, world):
    answer = _upload(api, world["designer"], FIXTURES / "coverage" / "event-based-gateway.bpmn")
    assert answer.status_code == 201, answer.get_json()
    therapy = start(api, world["coord"], "cov")
    waiting = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [(w["type"], w["activity_id"]) for w in waiting["waiting_for"]] == [("message", "M"), ("timer", "T")]
    assert waiting["next_due_at"] is not None
    deliver(api, world, therapy, "go", {"pallet": 3})
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "completed" and detail["data"]["go"] == {"pallet": 3}
