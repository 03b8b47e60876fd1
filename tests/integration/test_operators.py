"""Service operators: notify (alert and e-mail through a real local SMTP server), http, publish, the registry."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from ..conftest import ROOT
from .conftest import PASSWORD

SERVICE_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="Definitions_mes" targetNamespace="http://tether.example/bpmn">
  <bpmn:process id="mes_order" name="Order manufacturing from the MES" isExecutable="true">
    <bpmn:laneSet id="LaneSet_1">
      <bpmn:lane id="Lane_Coordinator" name="Coordinator">
        <bpmn:flowNodeRef>Start_Order</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Task_Order</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Service_Mes</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Service_Publish</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>Task_Confirm</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>End_Done</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="Start_Order"><bpmn:outgoing>F1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="Task_Order" name="Place order"><bpmn:incoming>F1</bpmn:incoming>
      <bpmn:outgoing>F2</bpmn:outgoing></bpmn:userTask>
    <bpmn:serviceTask id="Service_Mes" name="Create MES order">
      <bpmn:extensionElements>
        <spiffworkflow:serviceTaskOperator id="http" resultVariable="mes_answer">
          <spiffworkflow:parameters>
            <spiffworkflow:parameter id="method" type="str" value="'POST'"/>
            <spiffworkflow:parameter id="url" type="str" value="mes_url"/>
            <spiffworkflow:parameter id="headers" type="any" value="{'X-Source': 'tether'}"/>
            <spiffworkflow:parameter id="json" type="any" value="{'coi': coi, 'product': 'CAR-T'}"/>
          </spiffworkflow:parameters>
        </spiffworkflow:serviceTaskOperator>
      </bpmn:extensionElements>
      <bpmn:incoming>F2</bpmn:incoming><bpmn:outgoing>F3</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:serviceTask id="Service_Publish" name="Announce the order">
      <bpmn:extensionElements>
        <spiffworkflow:serviceTaskOperator id="publish" resultVariable="published">
          <spiffworkflow:parameters>
            <spiffworkflow:parameter id="type" type="str" value="'mes.order.created'"/>
            <spiffworkflow:parameter id="data" type="any" value="{'order': mes_answer['body']['order']}"/>
          </spiffworkflow:parameters>
        </spiffworkflow:serviceTaskOperator>
      </bpmn:extensionElements>
      <bpmn:incoming>F3</bpmn:incoming><bpmn:outgoing>F4</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:userTask id="Task_Confirm" name="Confirm slot"><bpmn:incoming>F4</bpmn:incoming>
      <bpmn:outgoing>F5</bpmn:outgoing></bpmn:userTask>
    <bpmn:endEvent id="End_Done"><bpmn:incoming>F5</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="F1" sourceRef="Start_Order" targetRef="Task_Order"/>
    <bpmn:sequenceFlow id="F2" sourceRef="Task_Order" targetRef="Service_Mes"/>
    <bpmn:sequenceFlow id="F3" sourceRef="Service_Mes" targetRef="Service_Publish"/>
    <bpmn:sequenceFlow id="F4" sourceRef="Service_Publish" targetRef="Task_Confirm"/>
    <bpmn:sequenceFlow id="F5" sourceRef="Task_Confirm" targetRef="End_Done"/>
  </bpmn:process>
</bpmn:definitions>
"""


def _free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mailbox():
    """A real SMTP server on a free loopback port; yields the list of messages it received."""
    from aiosmtpd.controller import Controller

    received: list[dict] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            received.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "text": envelope.content.decode("utf-8", errors="replace"),
                }
            )
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    received_port = controller.port
    yield received, received_port
    controller.stop()


@pytest.fixture
def mes(app):
    """A stand-in MES on this machine (its network allowed to http tasks): creates orders, fails on /broken."""
    app.config["HTTP_OPERATOR_NETWORKS"] = "127.0.0.0/8"
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
            calls.append({"path": self.path, "json": body, "source": self.headers.get("X-Source")})
            status, answer = (
                (500, {"error": "MES database offline"})
                if self.path == "/broken"
                else (201, {"order": f"MO-{len(calls)}", "coi": body["coi"]})
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


def start_mini(api, world):
    """Start a mini therapy and enrol it, which reaches the notify task."""
    therapy = (
        api.as_(world["coord"])
        .post(
            "/api/v1/therapies",
            json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}},
        )
        .get_json()
    )
    [task] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"]
    done = api.as_(world["coord"]).post(
        f"/api/v1/tasks/{task['id']}/complete", json={"data": {"eligible": True, "patient_initials": "AB"}}
    )
    assert done.status_code == 200, done.get_json()
    return therapy


def alerts_of(app, therapy_id):
    """The therapy's alerts as (kind, role, message, data)."""
    from server.store.extensions import db
    from server.store.models import Alert

    with app.app_context():
        return [
            (a.kind, a.role, a.message, a.data)
            for a in db.session.execute(select(Alert).where(Alert.therapy_id == therapy_id)).scalars()
        ]


def test_notify_raises_an_alert_and_emails_the_role_at_the_site(api, world, app, mailbox):
    from server.access import accounts

    messages, port = mailbox
    with app.app_context():
        accounts.add_user("logib", ["logistics"], ["SITE-B"], "Logistics B", PASSWORD, "test")
        accounts.add_user("hub", ["logistics"], [], "Logistics hub", PASSWORD, "test")
    app.config.update(
        SMTP_URL=f"smtp://127.0.0.1:{port}", SMTP_RECIPIENT_DOMAIN="tether.test", SMTP_FROM="tether@tether.test"
    )
    therapy = start_mini(api, world)

    deadline = time.monotonic() + 10
    while len(messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(to for m in messages for to in m["to"]) == ["hub@tether.test", "logistics@tether.test"]
    for mail in messages:
        assert mail["from"] == "tether@tether.test"
        assert re.search(r"^Subject: \[Tether\] logistics at SITE-A: Shipment expected for AB", mail["text"], re.M)
        assert therapy["coi"] in mail["text"]
    assert alerts_of(app, therapy["id"]) == [
        ("notification", "logistics", "Shipment expected for AB", {"site": "SITE-A"})
    ]
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["notified"]["emailed"] == 2 and detail["data"]["notified"]["site"] == "SITE-A"
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    assert {"alert.raised", "notification.sent"} <= {e["action"] for e in audit["items"]}


def test_notify_without_smtp_still_raises_the_alert(api, world, app, mailbox, monkeypatch):
    from server.workflow.operators import notify

    messages, _port = mailbox
    assert not app.config["SMTP_URL"]
    looked_up = []
    monkeypatch.setattr(notify, "recipients", lambda *args: looked_up.append(args) or [])
    therapy = start_mini(api, world)
    time.sleep(0.3)
    assert messages == []
    assert [kind for kind, *_rest in alerts_of(app, therapy["id"])] == ["notification"]
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["notified"]["emailed"] == 0
    assert looked_up == [], "without mail, the step reads no user accounts"


def deploy_service_process(api, world):
    """Deploy the MES order process (http, then publish)."""
    answer = api.as_(world["designer"]).post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(SERVICE_BPMN.encode()), "mes-order.bpmn")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201, answer.get_json()


def run_order(api, world, mes_url):
    """Start an order therapy and complete its first task, which calls the MES."""
    therapy = (
        api.as_(world["coord"])
        .post(
            "/api/v1/therapies",
            json={
                "process_key": "mes_order",
                "site": "SITE-A",
                "patient": {"reference": "PT-5"},
                "data": {"mes_url": mes_url},
            },
        )
        .get_json()
    )
    [task] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"]
    done = api.as_(world["coord"]).post(f"/api/v1/tasks/{task['id']}/complete", json={"data": {}})
    return therapy, done


def test_http_calls_the_external_api_and_publish_emits_a_custom_event_to_webhooks(api, world, app, mes):
    base, calls = mes
    deploy_service_process(api, world)
    hook = (
        api.as_(world["integrator"])
        .post("/api/v1/webhooks", json={"url": "https://mes.example/events", "events": ["mes.*"]})
        .get_json()
    )
    therapy, done = run_order(api, world, f"{base}/orders")
    assert done.status_code == 200, done.get_json()
    assert calls == [{"path": "/orders", "json": {"coi": therapy["coi"], "product": "CAR-T"}, "source": "tether"}]
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["mes_answer"] == {"status": 201, "body": {"order": "MO-1", "coi": therapy["coi"]}}
    assert detail["data"]["published"] == {"published": "mes.order.created"}
    assert [t["name"] for t in detail["open_tasks"]] == ["Confirm slot"]
    [delivery] = api.as_(world["integrator"]).get(f"/api/v1/webhooks/{hook['id']}/deliveries").get_json()["items"]
    assert delivery["event_type"] == "mes.order.created" and delivery["therapy_id"] == therapy["id"]
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    assert "event.published" in [e["action"] for e in audit["items"]]


def test_http_non_2xx_answer_fails_the_service_task(api, world, app, mes):
    base, calls = mes
    deploy_service_process(api, world)
    therapy, done = run_order(api, world, f"{base}/broken")
    assert calls and calls[0]["path"] == "/broken"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert "mes_answer" not in detail["data"] and "published" not in detail["data"]
    assert "Confirm slot" not in [t["name"] for t in detail["open_tasks"]]
    if done.status_code == 200:  # the failure is kept as an incident, retried later
        audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
        failures = [e["data"]["message"] for e in audit["items"] if e["action"] == "service.failed"]
        assert failures and "answered 500" in failures[0] and "MES database offline" in failures[0]
    else:
        assert done.status_code == 422 and "answered 500" in done.get_json()["error"]["message"]


def test_http_reaches_no_loopback_private_or_metadata_address_unless_its_network_is_allowed(api, world, app, mes):
    base, calls = mes
    deploy_service_process(api, world)
    app.config["HTTP_OPERATOR_NETWORKS"] = ""
    therapy, done = run_order(api, world, f"{base}/orders")
    assert calls == [], "nothing was sent to the server's own machine"
    refused = done.status_code == 422
    refusals = [done.get_json()["error"]["message"]] if refused else service_failures(api, world, therapy)
    assert refusals and "127.0.0.1" in refusals[0] and "TETHER_HTTP_OPERATOR_NETWORKS" in refusals[0]
    app.config["HTTP_OPERATOR_NETWORKS"] = "10.20.0.0/16, 192.0.2.7"
    _therapy, done = run_order(api, world, f"{base}/orders")
    assert calls == []
    app.config["HTTP_OPERATOR_NETWORKS"] = "10.20.0.0/16, 127.0.0.1"
    _therapy, done = run_order(api, world, f"{base}/orders")
    assert done.status_code == 200 and len(calls) == 1


def test_http_checks_the_address_it_reached_not_only_what_dns_said(app, mes, monkeypatch):
    """A host that resolved to a public address at the check but connects to loopback (DNS rebinding)."""
    from server.integration import webhooks
    from server.workflow.operators import http

    base, calls = mes
    monkeypatch.setattr(webhooks, "resolve", lambda host, port: ["93.184.216.34"])
    app.config["HTTP_OPERATOR_NETWORKS"] = ""
    with app.app_context(), pytest.raises(Exception, match="refused to send http service tasks to 127.0.0.1"):
        http.run(None, {"method": "POST", "url": f"{base}/orders", "json": {"coi": "W123426000001"}})
    assert calls == []


def test_a_bad_network_setting_stops_the_server_from_starting_naming_the_entry(database_url):
    from server import create_app

    with pytest.raises(ValueError, match="TETHER_HTTP_OPERATOR_NETWORKS: 'mes.local' is not a network"):
        create_app({"SQLALCHEMY_DATABASE_URI": database_url, "HTTP_OPERATOR_NETWORKS": "10.0.0.0/8, mes.local"})


def service_failures(api, world, therapy) -> list[str]:
    """The messages of the therapy's failed service calls, from its audit trail."""
    audit = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    return [e["data"]["message"] for e in audit["items"] if e["action"] == "service.failed"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            ('<spiffworkflow:parameter id="url" type="str" value="mes_url"/>', ""),
            "Service task Service_Mes needs the parameter url ('http' takes: headers, json, method, timeout, url).",
        ),
        (
            ('id="url" type="str"', 'id="uri" type="str"'),
            "Service task Service_Mes needs the parameter url and has 'uri', which 'http' does not take",
        ),
        (
            ('<spiffworkflow:parameter id="type" type="str"', '<spiffworkflow:parameter id="kind" type="str"'),
            "Service task Service_Publish needs the parameter type and has 'kind', which 'publish' does not take",
        ),
    ],
)
def test_a_service_task_missing_a_required_parameter_or_naming_an_unknown_one_is_refused_at_upload(
    api, world, change, said
):
    wrong = SERVICE_BPMN.replace(*change)
    answer = api.as_(world["designer"]).post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(wrong.encode()), "mes-order.bpmn")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 422, answer.get_json()
    error = answer.get_json()["error"]
    assert said in error["message"]
    element = said.split()[2]
    assert error["details"]["element_id"] == element
    assert (
        error["details"]["line"]
        == SERVICE_BPMN.splitlines().index(
            next(line for line in SERVICE_BPMN.splitlines() if f'id="{element}"' in line)
        )
        + 1
    )


def test_every_operator_declares_its_parameters_as_its_documentation_names_them():
    from server.workflow.operators import OPERATORS, parameters

    for name, (_run, doc) in OPERATORS.items():
        for parameter in parameters(name):
            assert f"`{parameter}`" in doc, (name, parameter)


def test_unknown_operators_are_refused_at_upload_and_every_operator_is_documented(api, world):
    from server.workflow.operators import OPERATORS, operator_names

    unknown = SERVICE_BPMN.replace('serviceTaskOperator id="http"', 'serviceTaskOperator id="ftp"')
    answer = api.as_(world["designer"]).post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(unknown.encode()), "bad.bpmn")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 422 and "ftp" in answer.get_json()["error"]["message"]
    assert operator_names() == {"coi.assign", "http", "notify", "publish", "slot.book"}
    documentation = (ROOT / "docs" / "operators.md").read_text()
    for name, (_run, doc) in OPERATORS.items():
        assert f"\n## `{name}`\n" in documentation and "Parameters" in doc, name
