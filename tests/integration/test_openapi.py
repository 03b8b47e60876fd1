"""The OpenAPI document: every route is in it, it is valid, and real answers match the documented schemas."""

from __future__ import annotations

import copy
import io
import re

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate
from werkzeug.test import EnvironBuilder

from ..conftest import FIXTURES
from .conftest import PASSWORD

MAIN = [
    ("GET", "/api/v1/health"),
    ("POST", "/api/v1/process-definitions"),
    ("GET", "/api/v1/process-definitions"),
    ("GET", "/api/v1/process-definitions/{key}"),
    ("POST", "/api/v1/therapies"),
    ("GET", "/api/v1/therapies"),
    ("GET", "/api/v1/therapies/{therapy_id}"),
    ("POST", "/api/v1/therapies/{therapy_id}/cancel"),
    ("GET", "/api/v1/therapies/{therapy_id}/timeline"),
    ("GET", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{task_id}"),
    ("POST", "/api/v1/tasks/{task_id}/complete"),
    ("POST", "/api/v1/messages"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/verify"),
    ("POST", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks/{webhook_id}"),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
]


@pytest.fixture
def document(api):
    """The served OpenAPI document."""
    answer = api.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def test_every_route_is_documented_and_the_document_is_valid_openapi(app, document):
    validate(document)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            routes |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes and routes == documented
    for method, path in MAIN:
        operation = document["paths"][path][method.lower()]
        success = [status for status in operation["responses"] if status.startswith("2")]
        assert success, (method, path)
        if success[0] != "204":
            assert "schema" in operation["responses"][success[0]]["content"]["application/json"], (method, path)
    assert "text/event-stream" in document["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]


def request_of(answer) -> WerkzeugOpenAPIRequest:
    """The request that got ``answer``, rebuilt without its (already read) body, for response validation."""
    sent = answer.request
    return WerkzeugOpenAPIRequest(
        EnvironBuilder(path=sent.path, method=sent.method, query_string=sent.query_string.decode()).get_request()
    )


class Checked:
    """A JSON client that validates every answer against the OpenAPI document."""

    def __init__(self, api, document):
        self.api, self.openapi, self.checked = api, OpenAPI.from_dict(document), set()

    def __call__(self, method: str, path: str, token: str, **kwargs):
        """Make the call and check its answer against the document."""
        client = self.api.as_(token)
        if method == "DELETE":
            answer = client.client.delete(path, headers={"Authorization": f"Bearer {token}"})
        else:
            answer = getattr(client, method.lower())(path, **kwargs)
        self.openapi.validate_response(request_of(answer), WerkzeugOpenAPIResponse(answer))
        self.checked.add((method, answer.request.path, answer.status_code))
        return answer


def test_real_answers_of_the_main_endpoints_match_their_documented_schemas(api, world, document):
    call = Checked(api, document)
    coord, integrator = world["coord"], world["integrator"]
    assert call("GET", "/api/v1/health", None).status_code == 200
    mini = (FIXTURES / "mini.bpmn").read_bytes().replace(b"Mini therapy", b"Mini therapy 2")
    forms = [(io.BytesIO(p.read_bytes()), p.name) for p in sorted(FIXTURES.glob("*.json"))]
    uploaded = call(
        "POST",
        "/api/v1/process-definitions",
        world["designer"],
        content_type="multipart/form-data",
        data={"bpmn": (io.BytesIO(mini), "mini.bpmn"), "forms": forms},
    )
    assert uploaded.status_code == 201, uploaded.get_json()
    refused = call(
        "POST",
        "/api/v1/process-definitions",
        world["designer"],
        content_type="multipart/form-data",
        data={"bpmn": (io.BytesIO(b"<not-bpmn/>"), "x.bpmn")},
    )
    assert refused.status_code == 422
    call("GET", "/api/v1/process-definitions", coord)
    call("GET", "/api/v1/process-definitions/mini_therapy", coord)
    hook = call(
        "POST",
        "/api/v1/webhooks",
        integrator,
        json={"url": "https://mes.example/hook", "events": ["therapy.*", "task.*"]},
    ).get_json()
    therapy = call(
        "POST",
        "/api/v1/therapies",
        coord,
        json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}},
    ).get_json()
    call("GET", "/api/v1/therapies?status=active", coord)
    [task] = call("GET", f"/api/v1/tasks?therapy_id={therapy['id']}", coord).get_json()["items"]
    call("GET", f"/api/v1/tasks/{task['id']}", coord)
    done = call(
        "POST",
        f"/api/v1/tasks/{task['id']}/complete",
        coord,
        json={"data": {"eligible": True, "patient_initials": "AB"}},
    )
    assert done.status_code == 200
    assert call("POST", f"/api/v1/tasks/{task['id']}/complete", coord, json={"data": {}}).status_code == 409
    message = call("POST", "/api/v1/messages", integrator, json={"name": "shipment.delivered", "coi": therapy["coi"]})
    assert message.status_code == 200
    assert (
        call(
            "POST", "/api/v1/messages", integrator, json={"name": "shipment.delivered", "therapy_id": therapy["id"]}
        ).status_code
        == 409
    )
    [receive] = call("GET", f"/api/v1/tasks?therapy_id={therapy['id']}", world["logistics"]).get_json()["items"]
    bad = call("POST", f"/api/v1/tasks/{receive['id']}/complete", world["logistics"], json={"data": {}})
    assert bad.status_code == 422
    signed = call(
        "POST",
        f"/api/v1/tasks/{receive['id']}/complete",
        world["logistics"],
        json={"data": {"received_ok": True}, "signature": {"password": PASSWORD, "meaning": "approval"}},
    )
    assert signed.status_code == 200 and signed.get_json()["task"]["completed_by"] == "logistics"
    call("GET", f"/api/v1/therapies/{therapy['id']}", coord)
    call("GET", f"/api/v1/therapies/{therapy['id']}/timeline", coord)
    other = call(
        "POST",
        "/api/v1/therapies",
        coord,
        json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-2"}},
    ).get_json()
    call("POST", f"/api/v1/therapies/{other['id']}/cancel", coord, json={"reason": "patient withdrew consent"})
    assert call("GET", "/api/v1/therapies/no-such-id", coord).status_code == 404
    call("GET", f"/api/v1/audit?therapy_id={therapy['id']}", world["auditor"])
    call("GET", "/api/v1/audit/verify", world["auditor"])
    call("GET", "/api/v1/webhooks", integrator)
    call("GET", f"/api/v1/webhooks/{hook['id']}", integrator)
    deliveries = call("GET", f"/api/v1/webhooks/{hook['id']}/deliveries", integrator).get_json()["items"]
    call("POST", f"/api/v1/webhooks/{hook['id']}/deliveries/{deliveries[0]['id']}/redeliver", integrator)
    assert call("POST", "/api/v1/webhooks", integrator, json={"url": "ftp://x", "events": ["*"]}).status_code == 422
    assert call("DELETE", f"/api/v1/webhooks/{hook['id']}", integrator).status_code == 204
    assert {(m, code) for m, _p, code in call.checked} >= {
        ("GET", 200),
        ("POST", 201),
        ("POST", 200),
        ("POST", 202),
        ("DELETE", 204),
        ("POST", 409),
        ("POST", 422),
        ("GET", 404),
    }


def test_a_response_that_differs_from_its_schema_is_caught(api, world, document):
    broken = copy.deepcopy(document)
    broken["components"]["schemas"]["Therapy"]["properties"]["coi"] = {"type": "integer"}
    therapy = api.as_(world["coord"]).post(
        "/api/v1/therapies", json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}}
    )
    with pytest.raises(Exception, match="(?i)invalid|valid"):
        OpenAPI.from_dict(broken).validate_response(request_of(therapy), WerkzeugOpenAPIResponse(therapy))


def test_docs_page_is_rendered_locally_from_the_document(api, document):
    page = api.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path in document["paths"]:
        assert path in html, path
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing loaded from elsewhere
    assert "<script" not in html
    assert "Webhook" in html and "webhook-id" in html and "Last-Event-ID" in html
