"""QA sees what it signs: the evidence a decision rests on beside the form (the task's ``evidence`` property) and
fields the system already knows filled in (``ui:prefill``), on the page and in the API's task item."""

from __future__ import annotations

import io
import re

from server.config import project_root

from ..e2e.test_bundled_journeys import run_journey, take_steps
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from ..support.journeys import only_task
from ..support.pages import csrf, signed_in
from .conftest import PASSWORD

RELEASE = AUTOLOGOUS_HAPPY_PATH.index(("task", "Task_QaRelease"))
DELIVERED = next(i for i, step in enumerate(AUTOLOGOUS_HAPPY_PATH) if step[:2] == ("message", "shipment.delivered"))
FIXTURES = project_root() / "tests" / "fixtures"
MINI = (FIXTURES / "mini.bpmn").read_text()
MINI_FORMS = {p.name: p.read_bytes() for p in FIXTURES.glob("mini-*.json")}


def at_release_with_a_warm_leg(api, world, clock):
    """A bundled therapy at its QA release whose fresh material warmed to 12 °C in transit (an excursion), handed
    from the apheresis centre to the courier and on to manufacturing; returns (therapy, release task)."""
    therapy = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH[:DELIVERED])
    scan = "&/" + therapy["coi"]
    for giver, taker, where in (
        ("SITE-A apheresis", "ColdChain courier", "SITE-A dock"),
        ("ColdChain courier", "MFG-1 goods-in", "MFG-1 dock"),
    ):
        body = {"material_id": "BAG-1", "from_party": giver, "to_party": taker, "location": where, "scanned_coi": scan}
        handed = api.as_(world["integrator"]).post(f"/api/v1/therapies/{therapy['id']}/custody", json=body)
        assert handed.status_code == 201, handed.get_json()
    moment = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    reading = {"sensor_id": "LOGGER-1", "temperature_c": 12.0, "recorded_at": moment}
    warm = api.as_(world["integrator"]).post(f"/api/v1/therapies/{therapy['id']}/conditions", json=reading)
    assert warm.status_code == 201 and warm.get_json()["excursion"] is True, warm.get_json()
    therapy = take_steps(api, world, clock, therapy, AUTOLOGOUS_HAPPY_PATH[DELIVERED:RELEASE])
    release = only_task(api, world["qa"], therapy["id"])
    assert release["activity_id"] == "Task_QaRelease"
    return therapy, release


def test_the_release_page_shows_what_the_decision_rests_on_and_prefills_the_batch(app, api, world, clock, bundled):
    therapy, release = at_release_with_a_warm_leg(api, world, clock)
    page = signed_in(app, "qa").get(f"/tasks/{release['id']}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    panel = re.search(r'<section class="evidence".*?</section>', text, re.S).group(0)
    assert "What this decision rests on" in panel

    # The QC result and the MES data, from the process data under each message's variable.
    def message(variable: str) -> str:
        found = re.search(
            rf'data-testid="evidence-message-{variable}">(.*?)(?=<div class="evidence-message"|<h3>)', panel, re.S
        )
        assert found, variable
        return found.group(1)

    qc = message("qc")
    assert "QC results received" in qc and "qc.results" in qc and "received" in qc
    assert re.search(r"<dt>Result</dt><dd>pass</dd>", qc) and "QC-0413" in qc
    assert "B-26-0413" in message("mes_started")
    assert 'data-testid="evidence-message-mes_completed"' in panel

    # One excursion, listed; the custody chain in the order of the handoffs; the open excursion alert.
    assert re.search(r'data-testid="evidence-excursions"[^>]*>1 excursion<', panel)
    assert "12.0" in re.search(r'data-testid="evidence-excursion-readings">.*?</table>', panel, re.S).group(0)
    custody = re.search(r'data-testid="evidence-custody">.*?</table>', panel, re.S).group(0)
    assert custody.index("SITE-A apheresis") < custody.index("ColdChain courier") < custody.index("MFG-1 goods-in")
    assert "evidence-custody-break" not in panel
    alerts = re.search(r'data-testid="evidence-alerts">.*?</ul>', panel, re.S).group(0)
    assert "badge-high" in alerts

    # The batch number is filled in from the MES message, and still an ordinary input the user may change.
    field = re.search(r'<input[^>]*name="data.batch_number"[^>]*>', text).group(0)
    assert 'value="B-26-0413"' in field and "readonly" not in field and "disabled" not in field
    assert "Filled in from the therapy&#39;s data (mes_started.batch)" in text

    # The API lists the prefilled value with the form; the user's own value wins.
    item = api.as_(world["qa"]).get(f"/api/v1/tasks/{release['id']}").get_json()
    assert item["form"]["prefill"] == {"batch_number": "B-26-0413"}
    assert item["form"]["ui_schema"]["batch_number"]["ui:prefill"] == "mes_started.batch"
    client = signed_in(app, "qa")
    token = csrf(client, f"/tasks/{release['id']}")
    done = client.post(
        f"/tasks/{release['id']}",
        data={
            "csrf_token": token,
            "data.batch_number": "B-26-0413-A",
            "data.batch_record_reviewed": "true",
            "data.qc_results_reviewed": "true",
            "data.release_decision": "released",
            "signature_meaning": "approval",
            "signature_password": PASSWORD,
        },
    )
    assert done.status_code == 302, done.get_data(as_text=True)
    completed = api.as_(world["qa"]).get(f"/api/v1/tasks/{release['id']}").get_json()
    assert completed["status"] == "completed" and "prefill" not in completed["form"]
    detail = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["batch_number"] == "B-26-0413-A"
    # Read afterwards, the panel says it shows the records as they stand now, not as they were when signed.
    later = client.get(f"/tasks/{release['id']}").get_data(as_text=True)
    assert 'data-testid="evidence-as-of"' in later and 'value="B-26-0413-A"' in later


def test_a_task_without_evidence_shows_no_panel(app, api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH[:1])
    task = only_task(api, world["coord"], therapy["id"])
    assert task["activity_id"] == "Task_Scheduling" and "prefill" not in task["form"]
    page = signed_in(app, "coord").get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert "What this decision rests on" not in page


def test_the_evidence_withholds_the_patient_from_who_may_not_know_it(app, api, world, clock, bundled):
    """A payload that names the patient shows it withheld to a reader who may not know the patient (QA, of no
    site that meets the patient)."""
    therapy = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH[:RELEASE])
    from server.store.extensions import db
    from server.store.models import Therapy

    with app.app_context():
        row = db.session.get(Therapy, therapy["id"])
        row.data = {**row.data, "qc": {**row.data["qc"], "report": "QC for PT-42"}}
        db.session.commit()
    release = only_task(api, world["qa"], therapy["id"])
    page = signed_in(app, "qa").get(f"/tasks/{release['id']}").get_data(as_text=True)
    assert "QC for [withheld]" in page and "PT-42" not in page


def upload(api, token, bpmn: str):
    files = {
        "bpmn": (io.BytesIO(bpmn.encode()), "diagram.bpmn"),
        "forms": [(io.BytesIO(c), n) for n, c in MINI_FORMS.items()],
    }
    return api.as_(token).post("/api/v1/process-definitions", data=files, content_type="multipart/form-data")


def test_evidence_naming_neither_a_record_nor_a_message_is_refused_with_element_and_line(api, world):
    old = '<spiffworkflow:property name="signature" value="approval"/>'
    bpmn = MINI.replace(old, old + '<spiffworkflow:property name="evidence" value="custody,lims"/>')
    refused = upload(api, world["designer"], bpmn)
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert "evidence names 'lims'" in error["message"]
    line = MINI.splitlines().index('    <bpmn:userTask id="Task_Receive" name="Receive shipment">') + 1
    assert error["details"]["element_id"] == "Task_Receive" and error["details"]["line"] == line
