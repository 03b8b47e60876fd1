"""A signature's meaning follows the decision it signs (21 CFR 11.50): declared in the diagram per value of a
form field, checked at completion, bound into the signed hash and shown by the record."""

from __future__ import annotations

import io
import re

import pytest

from server.config import project_root

from ..e2e.test_bundled_journeys import run_journey
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH, form_data
from ..support.journeys import complete, only_task, start, to_receipt
from ..support.pages import csrf, signed_in
from .conftest import PASSWORD

FIXTURES = project_root() / "tests" / "fixtures"
MINI = (FIXTURES / "mini.bpmn").read_text()
MINI_FORMS = {p.name: p.read_bytes() for p in FIXTURES.glob("mini-*.json")}
BEFORE_RELEASE = AUTOLOGOUS_HAPPY_PATH[: AUTOLOGOUS_HAPPY_PATH.index(("task", "Task_QaRelease"))]
REJECTED = {"release_decision": "rejected", "release_comment": "Sterility sample invalid."}


def upload(api, token, bpmn: str):
    files = {
        "bpmn": (io.BytesIO(bpmn.encode()), "diagram.bpmn"),
        "forms": [(io.BytesIO(c), n) for n, c in MINI_FORMS.items()],
    }
    return api.as_(token).post("/api/v1/process-definitions", data=files, content_type="multipart/form-data")


def mini_signed(declaration: str) -> str:
    """The mini diagram with its receipt task's signature declared as ``declaration``."""
    old = '<spiffworkflow:property name="signature" value="approval"/>'
    assert old in MINI
    return MINI.replace(old, f'<spiffworkflow:property name="signature" value="{declaration}"/>')


def release_task(api, world, clock):
    therapy = run_journey(api, world, clock, "autologous_car_t", BEFORE_RELEASE)
    release = only_task(api, world["qa"], therapy["id"])
    assert release["activity_id"] == "Task_QaRelease"
    return therapy, release


def sign(api, world, task: dict, data: dict, meaning: str):
    return complete(api, world["qa"], task["id"], data, signature={"password": PASSWORD, "meaning": meaning})


def test_the_release_task_lists_the_meaning_of_each_decision(api, world, clock, bundled):
    _therapy, release = release_task(api, world, clock)
    assert release["signature"] == {
        "meaning": "approval",
        "field": "release_decision",
        "meanings": {"released": "approval", "rejected": "rejection"},
    }


def test_rejecting_a_batch_signs_with_the_meaning_rejection(api, world, clock, bundled):
    therapy, release = release_task(api, world, clock)
    data = {**form_data(release["form"]["name"], therapy["coi"]), **REJECTED}

    refused = sign(api, world, release, data, "approval")
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "signature_meaning" and error["details"]["meaning"] == "rejection"
    assert "'rejection'" in error["message"] and "release_decision is 'rejected'" in error["message"]
    assert only_task(api, world["qa"], therapy["id"])["status"] == "ready"

    signed = sign(api, world, release, data, "rejection")
    assert signed.status_code == 200, signed.get_json()
    [signature] = signed.get_json()["task"]["signatures"]
    assert signature["meaning"] == "rejection" and signature["valid"] is True

    # The record and the therapy detail show the meaning; the audit entry carries it with the signed hash.
    record = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_json()
    [recorded] = [s for s in record["signatures"] if s["task_id"] == release["id"]]
    assert recorded["meaning"] == "rejection" and recorded["valid"] is True
    detail = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert [s["meaning"] for s in detail["signatures"]] == ["rejection"]
    entries = api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy['id']}&limit=500").get_json()
    [applied] = [e for e in entries["items"] if e["action"] == "signature.applied"]
    assert applied["data"]["meaning"] == "rejection" and applied["data"]["signed_hash"] == signature["content_hash"]


def test_releasing_a_batch_signs_with_the_meaning_approval(api, world, clock, bundled):
    therapy, release = release_task(api, world, clock)
    data = form_data(release["form"]["name"], therapy["coi"])
    assert data["release_decision"] == "released"

    refused = sign(api, world, release, data, "rejection")
    assert refused.status_code == 422, refused.get_json()
    assert refused.get_json()["error"]["code"] == "signature_meaning"
    assert refused.get_json()["error"]["details"]["meaning"] == "approval"

    signed = sign(api, world, release, data, "approval")
    assert signed.status_code == 200, signed.get_json()
    assert [s["meaning"] for s in signed.get_json()["task"]["signatures"]] == ["approval"]


def test_the_signed_hash_covers_the_meaning(app, api, world, clock, bundled):
    """The same record signed with another meaning is another hash: the meaning is part of what is signed."""
    from server.compliance.signatures import is_valid
    from server.store.extensions import db
    from server.store.models import Signature, TaskRecord

    therapy, release = release_task(api, world, clock)
    data = {**form_data(release["form"]["name"], therapy["coi"]), **REJECTED}
    assert sign(api, world, release, data, "rejection").status_code == 200
    with app.app_context():
        signature = db.session.query(Signature).filter_by(task_id=release["id"]).one()
        task = db.session.get(TaskRecord, release["id"])
        assert is_valid(signature, task)
        signature.meaning = "approval"  # as if the row were changed afterwards; not committed
        assert not is_valid(signature, task)
        db.session.rollback()


def test_a_meaning_per_value_on_another_diagram_is_checked_too(api, world):
    deployed = upload(api, world["designer"], mini_signed("received_ok: true=approval, false=rejection"))
    assert deployed.status_code == 201, deployed.get_json()
    therapy = start(api, world["coord"])
    task = to_receipt(api, world, therapy, payload={"carrier": "ColdChain"})
    assert task["signature"] == {
        "meaning": "approval",
        "field": "received_ok",
        "meanings": {"true": "approval", "false": "rejection"},
    }
    signature = {"password": PASSWORD, "meaning": "approval"}
    refused = complete(api, world["logistics"], task["id"], {"received_ok": False}, signature=signature)
    assert refused.status_code == 422 and refused.get_json()["error"]["details"]["meaning"] == "rejection"
    signature["meaning"] = "rejection"
    done = complete(api, world["logistics"], task["id"], {"received_ok": False}, signature=signature)
    assert done.status_code == 200, done.get_json()


TASK_LINE = MINI.splitlines().index('    <bpmn:userTask id="Task_Receive" name="Receive shipment">') + 1


@pytest.mark.parametrize(
    ("declaration", "says"),
    [
        ("received_ok: true=approval, false=sabotage", "meaning 'sabotage'"),
        ("sabotage", "meaning 'sabotage'"),
        ("condition: good=approval, bad=rejection", "'condition', which is not a field of its form"),
        ("received_ok: true=approval", "gives no meaning for 'false'"),
        ("received_ok: true=approval, false=rejection, maybe=review", "names 'maybe', not a value"),
        ("received_ok: true approval", "no value=meaning pair"),
    ],
)
def test_a_diagram_declaring_an_unknown_meaning_or_field_is_refused_with_element_and_line(
    api, world, declaration, says
):
    refused = upload(api, world["designer"], mini_signed(declaration))
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert says in error["message"], error["message"]
    assert error["details"]["element_id"] == "Task_Receive" and error["details"]["line"] == TASK_LINE


# -- the task page ------------------------------------------------------------------------------------------
def release_form(therapy: dict, token: str, **extra) -> dict:
    return {
        "csrf_token": token,
        "data.batch_number": "B-26-0413",
        "data.batch_record_reviewed": "true",
        "data.qc_results_reviewed": "true",
        "signature_password": PASSWORD,
        **extra,
    }


def test_the_release_page_names_each_decisions_meaning_and_signs_a_rejection_as_rejection(
    app, api, world, clock, bundled
):
    therapy, release = release_task(api, world, clock)
    client = signed_in(app, "qa")
    page = client.get(f"/tasks/{release['id']}").get_data(as_text=True)
    assert re.search(r'data-testid="signature-meaning"[^>]*>approval<', page)
    meanings = re.search(r'data-testid="signature-meanings">(.*?)</p>', page, re.S).group(1)
    assert (
        "Release batch: <strong>approval</strong>" in meanings
        and "Reject batch: <strong>rejection</strong>" in meanings
    )
    token = csrf(client, f"/tasks/{release['id']}")
    rejecting = {"data.release_decision": "rejected", "data.release_comment": "Sterility sample invalid."}

    # Confirming "approval" for a rejection is refused; the prompt then shows the meaning the decision selects.
    refused = client.post(
        f"/tasks/{release['id']}", data=release_form(therapy, token, signature_meaning="approval", **rejecting)
    )
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "The signature&#39;s meaning must be &#39;rejection&#39;" in text
    assert re.search(r'data-testid="signature-meaning"[^>]*>rejection<', text)
    assert 'name="signature_meaning" value="rejection"' in text

    done = client.post(
        f"/tasks/{release['id']}", data=release_form(therapy, token, signature_meaning="rejection", **rejecting)
    )
    assert done.status_code == 302, done.get_data(as_text=True)
    signed = api.as_(world["qa"]).get(f"/api/v1/tasks/{release['id']}").get_json()
    assert [s["meaning"] for s in signed["signatures"]] == ["rejection"]
