"""Need to know: the patient reference reaches only the treatment and apheresis sites, admin and auditor (the
detail and its process data, the timeline, the audit list, the record as JSON and PDF, webhook deliveries and
the live stream); a therapy's events reach the sites of all its parties, and no other site."""

from __future__ import annotations

import io
import json

import pypdf
import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import OutboxEvent, WebhookDelivery, WebhookSubscription

from ..support.journeys import complete, tasks_of
from .conftest import PASSWORD
from .test_therapy_network import NETWORK

REFERENCE = "PT-NET-1"
# What the centre records at enrolment: the reference as a value of its own and quoted in a note.
ENROLMENT = {"confirmed_patient": REFERENCE, "note": f"Consent of {REFERENCE} filed at 09:00"}
WITHHELD_NOTE = "Consent of [withheld] filed at 09:00"
# Integrators (who own webhook subscriptions) at the manufacturing site, the courier and the treatment centre.
INTEGRATORS = {"mes-mfg1": "MFG-1", "mes-courier": "COURIER-1", "mes-site-a": "SITE-A"}


@pytest.fixture
def integrators(app, network):  # noqa: F811 - the imported fixture
    """The network's tokens and one integrator scoped to each site of ``INTEGRATORS``."""
    from server.access import accounts

    tokens = dict(network)
    with app.app_context():
        for name, site in INTEGRATORS.items():
            accounts.add_user(name, ["integrator"], [site], f"{name} gateway", PASSWORD, "test")
            tokens[name] = accounts.issue_token(name, "test", "test")
    return tokens


def _enrolled(api, tokens, parties=NETWORK, reference=REFERENCE) -> dict:
    """A network therapy at SITE-A whose enrolment recorded ``ENROLMENT`` (the reference in the trail)."""
    body = {"process_key": "network_therapy", "site": "SITE-A", "patient": {"reference": reference}, "parties": parties}
    started = api.as_(tokens["coord"]).post("/api/v1/therapies", json=body)
    assert started.status_code == 201, started.get_json()
    therapy = started.get_json()
    (enrol,) = tasks_of(api, tokens["coord"], therapy["id"])
    done = complete(
        api, tokens["coord"], enrol["id"], {k: v.replace(REFERENCE, reference) for k, v in ENROLMENT.items()}
    )
    assert done.status_code == 200, done.get_json()
    return therapy


def _pdf_text(content: bytes) -> str:
    return " ".join(" ".join(page.extract_text().split()) for page in pypdf.PdfReader(io.BytesIO(content)).pages)


def _get(api, token, path):
    answer = api.as_(token).get(path)
    assert answer.status_code == 200, (path, answer.status_code)
    return answer


def test_a_manufacturing_user_reads_the_therapy_its_data_timeline_and_record_without_the_patient(api, network):  # noqa: F811
    therapy = _enrolled(api, network)
    base = f"/api/v1/therapies/{therapy['id']}"
    for name in ("coord", "admin", "auditor"):
        detail = _get(api, network[name], base).get_json()
        assert detail["patient"] == {"reference": REFERENCE}
        assert detail["data"]["patient_reference"] == REFERENCE and detail["data"]["note"] == ENROLMENT["note"]
        record = _get(api, network[name], f"{base}/record.json").get_json()
        assert record["therapy"]["patient_reference"] == REFERENCE and record["record"]["withheld"] == []
        assert f"Patient reference {REFERENCE}" in _pdf_text(_get(api, network[name], f"{base}/record.pdf").data)

    detail = _get(api, network["mfg1"], base)
    shown = detail.get_json()
    assert shown["patient"] is None and REFERENCE not in detail.get_data(as_text=True)
    assert shown["data"]["patient_reference"] is None and shown["data"]["confirmed_patient"] is None
    assert shown["data"]["note"] == WITHHELD_NOTE and shown["coi"] == therapy["coi"]
    timeline = _get(api, network["mfg1"], f"{base}/timeline")
    assert REFERENCE not in timeline.get_data(as_text=True)
    (enrolled,) = [i for i in timeline.get_json()["items"] if i["action"] == "task.completed"]
    assert enrolled["data"]["data"] == {"confirmed_patient": None, "note": WITHHELD_NOTE}
    record = _get(api, network["mfg1"], f"{base}/record.json")
    assert REFERENCE not in record.get_data(as_text=True)
    document = record.get_json()
    assert document["therapy"]["patient_reference"] is None and document["record"]["withheld"] == ["patient_reference"]
    assert document["audit"]["entries_intact"] is True and document["therapy"]["coi"] == therapy["coi"]
    text = _pdf_text(_get(api, network["mfg1"], f"{base}/record.pdf").data)
    assert REFERENCE not in text and "Patient reference withheld (need to know" in text


def test_the_audit_list_shows_a_party_its_therapies_entries_without_the_patient(api, network):  # noqa: F811
    therapy = _enrolled(api, network)
    path = f"/api/v1/audit?therapy_id={therapy['id']}&limit=500"
    full = _get(api, network["coord"], path).get_json()["items"]
    assert ENROLMENT in [e["data"].get("data") for e in full]
    # The manufacturing site takes part: it reads the same entries, the patient withheld.
    answer = _get(api, network["mfg1"], path)
    assert [e["seq"] for e in answer.get_json()["items"]] == [e["seq"] for e in full]
    assert REFERENCE not in answer.get_data(as_text=True)
    assert {"confirmed_patient": None, "note": WITHHELD_NOTE} in [
        e["data"].get("data") for e in answer.get_json()["items"]
    ]
    # A site that takes no part reads none of them.
    assert _get(api, network["mfg2"], path).get_json()["items"] == []


def _subscribe(api, token) -> str:
    answer = api.as_(token).post("/api/v1/webhooks", json={"url": "https://receiver.example/hook", "events": ["*"]})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def _delivered(app, subscription_id: str) -> dict[str, list[dict]]:
    """The bodies a subscription's deliveries carry, by therapy, as the dispatcher sends them."""
    from server.integration.webhooks import delivery_json

    with app.app_context():
        subscription = db.session.get_one(WebhookSubscription, subscription_id)
        rows = db.session.execute(
            select(OutboxEvent)
            .join(WebhookDelivery, WebhookDelivery.outbox_event_id == OutboxEvent.id)
            .where(WebhookDelivery.subscription_id == subscription_id)
            .order_by(OutboxEvent.id)
        ).scalars()
        out: dict[str, list[dict]] = {}
        for row in rows:
            out.setdefault(row.therapy_id, []).append(json.loads(delivery_json(row, subscription, "test")))
        return out


def test_webhooks_reach_every_party_of_a_therapy_and_the_patient_only_those_who_meet_it(app, api, integrators):
    hooks = {name: _subscribe(api, integrators[name]) for name in INTEGRATORS}
    shipped = _enrolled(api, integrators)
    not_shipped = _enrolled(api, integrators, parties={"manufacturing": "MFG-2"}, reference="PT-NET-2")
    with app.app_context():
        events = db.session.execute(select(OutboxEvent).where(OutboxEvent.therapy_id == shipped["id"])).scalars()
        types = [e.type for e in events]
    at_mfg1, by_courier, at_centre = (_delivered(app, hooks[name]) for name in INTEGRATORS)
    # Manufacturing and the courier get every event of the therapy they take part in, and none of the other.
    for delivered in (at_mfg1, by_courier):
        assert list(delivered) == [shipped["id"]]
        assert [e["type"] for e in delivered[shipped["id"]]] == types
        assert REFERENCE not in json.dumps(delivered)
    (enrolled,) = [e for e in at_mfg1[shipped["id"]] if e["type"] == "task.completed"]
    assert enrolled["data"]["data"] == {"confirmed_patient": None, "note": WITHHELD_NOTE}
    assert enrolled["subject"] == shipped["id"] and enrolled["data"]["coi"] == shipped["coi"]
    # The treatment centre meets the patient: both therapies, with the reference.
    assert set(at_centre) == {shipped["id"], not_shipped["id"]}
    (centre_enrolled,) = [e for e in at_centre[shipped["id"]] if e["type"] == "task.completed"]
    assert centre_enrolled["data"]["data"] == ENROLMENT
    # The outbox keeps the whole event.
    with app.app_context():
        kept = db.session.execute(select(OutboxEvent).where(OutboxEvent.type == "task.completed")).scalars().first()
        assert kept.data["data"] == ENROLMENT


def _streamed(api, token) -> list[dict]:
    answer = api.as_(token).get("/api/v1/events", headers={"Last-Event-ID": "0"})
    assert answer.status_code == 200
    return [
        json.loads(line.removeprefix("data: "))
        for line in answer.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]


def test_the_live_stream_follows_the_parties_and_withholds_the_patient(app, api, integrators):
    app.config["EVENTS_STREAM_SECONDS"] = 0.3
    shipped = _enrolled(api, integrators)
    not_shipped = _enrolled(api, integrators, parties={"manufacturing": "MFG-2"}, reference="PT-NET-2")
    therapies = {shipped["id"], not_shipped["id"]}
    mfg1 = [e for e in _streamed(api, integrators["mfg1"]) if e.get("subject") in therapies]
    assert {e["subject"] for e in mfg1} == {shipped["id"]} and "task.completed" in [e["type"] for e in mfg1]
    assert REFERENCE not in json.dumps(mfg1)
    courier = [e for e in _streamed(api, integrators["courier"]) if e.get("subject") in therapies]
    assert {e["subject"] for e in courier} == {shipped["id"]} and REFERENCE not in json.dumps(courier)
    mfg2 = [e for e in _streamed(api, integrators["mfg2"]) if e.get("subject") in therapies]
    assert {e["subject"] for e in mfg2} == {not_shipped["id"]} and "PT-NET-2" not in json.dumps(mfg2)
    centre = [e for e in _streamed(api, integrators["coord"]) if e.get("subject") in therapies]
    assert {e["subject"] for e in centre} == therapies
    assert ENROLMENT in [e["data"].get("data") for e in centre]
