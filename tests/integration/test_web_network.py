"""The therapy network on the web pages: each site sees the therapies it takes part in, with their parties; the
patient reference only for those who need to know it; a task whose party has no site says so; a party is
handed to another site, and a therapy cancelled, with a reason code."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import AuditEntry

from ..support.journeys import fire, tasks_of
from ..support.pages import csrf, signed_in
from .test_therapy_network import NETWORK, _enrolled, _therapy

PATIENT = "PT-NET-1"  # the patient of the therapies test_therapy_network starts


def _text(client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, path
    return page.get_data(as_text=True)


def _post(client, path: str, form_page: str, **form) -> str:
    """Send a page's form (with the CSRF token of ``form_page``), follow the redirect, and read the page (its
    text unescaped) that it shows."""
    page = client.post(path, data={**form, "csrf_token": csrf(client, form_page)}, follow_redirects=True)
    assert page.status_code == 200, path
    return html.unescape(page.get_data(as_text=True))


def _section(page: str, title_id: str) -> str:
    """The section of a page that the heading ``title_id`` opens."""
    start = page.index(f'id="{title_id}"')
    return page[start : page.index("</section>", start)]


def _row(rows: str, therapy_id: str) -> str:
    """The dashboard's table row of one therapy."""
    return re.search(rf'<tr data-therapy-id="{therapy_id}".*?</tr>', rows, re.S).group(0)


def test_a_therapy_started_in_the_control_tower_names_its_manufacturing_and_logistics_sites(app, api, network):
    coordinator = signed_in(app, "coord")
    dashboard = _text(coordinator, "/dashboard")
    start_form = _section(dashboard, "start-title")
    for site in ("MFG-1", "MFG-2", "COURIER-1", "APH-1"):
        assert f'<option value="{site}">' in start_form
    page = _post(
        coordinator,
        "/therapies",
        "/dashboard",
        process_key="network_therapy",
        site="SITE-A",
        patient_reference=PATIENT,
        apheresis="APH-1",
        manufacturing="MFG-1",
        logistics="COURIER-1",
    )
    text = page
    assert f"Therapy started for {PATIENT}" in text
    parties = re.search(r'data-testid="parties">(.*?)</dl>', text, re.S).group(1)
    assert re.findall(r'data-party="(\w+)">([^<]*)<', parties) == [
        ("treatment", "SITE-A"),
        ("apheresis", "APH-1"),
        ("manufacturing", "MFG-1"),
        ("logistics", "COURIER-1"),
    ]
    (therapy,) = api.as_(network["admin"]).get("/api/v1/therapies").get_json()["items"]
    assert therapy["parties"] == {**NETWORK, "treatment": "SITE-A", "apheresis": "APH-1"}


def test_a_wrong_site_at_start_is_refused_with_the_commands_message(app, api, network):
    page = _post(
        signed_in(app, "coord"),
        "/therapies",
        "/dashboard",
        process_key="network_therapy",
        site="SITE-A",
        patient_reference=PATIENT,
        manufacturing="SITE-B",
    )
    assert "The therapy was not started: Site SITE-B is a treatment-centre; the manufacturing party needs a site" in (
        page
    )
    assert api.as_(network["admin"]).get("/api/v1/therapies").get_json()["items"] == []


def test_each_site_sees_the_therapies_it_takes_part_in_and_the_patient_only_when_it_meets_them(app, api, network):
    therapy = _enrolled(api, network)
    for name, sees in (("coord", True), ("admin", True), ("auditor", True), ("mfg1", False), ("courier", False)):
        client = signed_in(app, name)
        row = _row(_text(client, "/dashboard/rows?status=all"), therapy["id"])
        assert "MFG-1" in row and "COURIER-1" in row, name
        assert (PATIENT in row, "withheld" in row) == (sees, not sees), name
        page = _text(client, f"/therapies/{therapy['id']}")
        assert (PATIENT in page) == sees, name
        assert re.search(r'data-testid="patient">(.*?)<', page).group(1) == (PATIENT if sees else "withheld")
        assert therapy["coi"][:8] in page.replace(" ", ""), name
    # MFG-2 takes no part: nothing of the therapy shows.
    maker2 = signed_in(app, "mfg2")
    assert "No therapies match." in _text(maker2, "/dashboard/rows?status=all")
    assert maker2.get(f"/therapies/{therapy['id']}").status_code == 404


def test_the_control_tower_filters_by_a_partys_site(app, api, network, clock):
    elsewhere = _enrolled(api, network, parties={"manufacturing": "MFG-2", "apheresis": "APH-1"})
    clock.advance(minutes=1)
    here = _enrolled(api, network)
    admin = signed_in(app, "admin")
    for query, shown in (
        ("manufacturing=MFG-1", [here]),
        ("manufacturing=MFG-2", [elsewhere]),
        ("logistics=COURIER-1", [here]),
        ("apheresis=APH-1", [elsewhere]),
        ("apheresis=SITE-A", [here]),  # the treatment centre unless another apheresis site is named
        ("", [here, elsewhere]),
    ):
        rows = _text(admin, f"/dashboard/rows?status=all&{query}")
        # (in the tower's order: the soonest deadline first)
        assert sorted(re.findall(r'data-therapy-id="([^"]+)"', rows)) == sorted(t["id"] for t in shown), query
    # The filters offer the sites that take part in what the user sees.
    filters = _text(signed_in(app, "mfg1"), "/dashboard")
    manufacturing = re.search(r'id="filter-manufacturing".*?</select>', filters, re.S).group(0)
    assert "MFG-1" in manufacturing and "MFG-2" not in manufacturing


def test_a_maker_works_the_task_without_learning_the_patient(app, api, network):
    therapy = _enrolled(api, network)
    maker = signed_in(app, "mfg1")
    inbox = _text(maker, "/tasks")
    assert "Manufacture the batch" in inbox and "withheld" in inbox and PATIENT not in inbox
    assert "manufacturing · MFG-1" in inbox
    # Nobody finds a therapy by a patient reference they may not know; the COI finds it.
    assert "Nothing to do right now for this filter." in _text(maker, f"/tasks?therapy={PATIENT}")
    assert "Manufacture the batch" in _text(maker, f"/tasks?therapy={therapy['coi']}")
    assert "Enrol patient" not in _text(signed_in(app, "coord"), f"/tasks?therapy={PATIENT}")  # done; nothing open
    (task,) = tasks_of(api, network["mfg1"], therapy["id"])
    page = _text(maker, f"/tasks/{task['id']}")
    assert re.search(r'data-testid="task-patient">(.*?)<', page).group(1) == "withheld"
    assert re.search(r'data-testid="task-party">(.*?)<', page).group(1) == "manufacturing · MFG-1"
    assert PATIENT not in page
    done = _post(maker, f"/tasks/{task['id']}", f"/tasks/{task['id']}")
    assert "Completed: Manufacture the batch (withheld)." in done and PATIENT not in done


def test_the_alerts_withhold_the_patient_from_a_manufacturing_site(app, api, network, clock):
    therapy = _enrolled(api, network)
    clock.advance(days=15)
    assert fire(app, therapy["id"])
    maker = _text(signed_in(app, "mfg1"), "/alerts")
    assert "is late" in maker and "withheld" in maker and PATIENT not in maker
    assert PATIENT in _text(signed_in(app, "admin"), "/alerts?scope=all")  # the escalation is manufacturing's


@pytest.mark.parametrize(("reader", "finds"), [("auditor", True), ("admin", True), ("qa", False)])
def test_the_audit_page_finds_a_therapy_by_patient_reference_only_for_those_who_may_know_it(
    app, api, network, reader, finds
):
    therapy = _enrolled(api, network)
    client = signed_in(app, reader)
    by_patient = _text(client, f"/audit?therapy={PATIENT}")
    assert ("No therapy matches" not in by_patient) == finds
    by_coi = _text(client, f"/audit?therapy={therapy['coi']}")
    heading = re.search(r"<p>Entries of therapy .*?</p>", by_coi, re.S).group(0)
    assert (PATIENT if finds else "withheld") in heading
    assert (PATIENT in by_coi) == finds


def test_a_task_without_a_site_says_what_it_waits_for_until_the_centre_hands_it_to_one(app, api, network):
    therapy = _enrolled(api, network, parties={"logistics": "COURIER-1"})
    (task,) = _therapy(api, network["coord"], therapy["id"]).get_json()["open_tasks"]
    waiting = "waiting for the treatment centre to name a manufacturing site"
    coordinator = signed_in(app, "coord")
    therapy_page = _text(coordinator, f"/therapies/{therapy['id']}")
    assert waiting in therapy_page
    assert re.search(r'data-party="manufacturing">(.*?)<', therapy_page).group(1) == "not named yet"
    maker = signed_in(app, "maker")  # of no particular site: sees the task
    task_page = _text(maker, f"/tasks/{task['id']}")
    assert waiting in task_page and "Complete task" not in task_page
    handed = _post(
        coordinator,
        f"/therapies/{therapy['id']}/parties",
        f"/therapies/{therapy['id']}",
        party="manufacturing",
        site="MFG-1",
        reason_code="CAPACITY",
    )
    text = handed
    assert "The manufacturing party is now MFG-1; its open tasks moved there." in text and waiting not in text
    assert "Complete task" in _text(signed_in(app, "mfg1"), f"/tasks/{task['id']}")


def test_a_party_is_handed_to_another_site_with_a_reason_code(app, api, network):
    therapy = _enrolled(api, network)
    coordinator = signed_in(app, "coord")
    page = _text(coordinator, f"/therapies/{therapy['id']}")
    form = _section(page, "parties-change-title")
    assert '<option value="EQUIPMENT_FAILURE">' in form and '<option value="PATIENT_WITHDREW">' not in form
    refused = _post(
        coordinator,
        f"/therapies/{therapy['id']}/parties",
        f"/therapies/{therapy['id']}",
        party="manufacturing",
        site="MFG-2",
        reason_code="OTHER",
    )
    assert (
        "The manufacturing party was not handed over: With the reason code OTHER, say the reason in 'reason'."
        in refused
    )
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["parties"]["manufacturing"] == "MFG-1"
    moved = _post(
        coordinator,
        f"/therapies/{therapy['id']}/parties",
        f"/therapies/{therapy['id']}",
        party="manufacturing",
        site="MFG-2",
        reason_code="EQUIPMENT_FAILURE",
        reason="Incubator down",
    )
    assert "The manufacturing party is now MFG-2" in moved
    assert signed_in(app, "mfg1").get(f"/therapies/{therapy['id']}").status_code == 404
    assert "Manufacture the batch" in _text(signed_in(app, "mfg2"), "/tasks")
    with app.app_context():
        entry = db.session.execute(
            select(AuditEntry).where(AuditEntry.action == "therapy.parties_changed")
        ).scalar_one()
        assert (entry.actor, entry.reason, entry.data["reason_code"]) == (
            "coord",
            "Incubator down",
            "EQUIPMENT_FAILURE",
        )


@pytest.mark.parametrize(
    ("user", "forms"),
    [("coord", (True, True)), ("planner1", (True, False)), ("apheresis", (False, False)), ("mfg1", (False, False))],
)
def test_the_treatment_centre_hands_parties_over_and_cancels_and_a_planner_hands_them_over(
    app, api, network, user, forms
):
    therapy = _enrolled(api, network, parties={**NETWORK, "apheresis": "APH-1"})
    page = _text(signed_in(app, user), f"/therapies/{therapy['id']}")
    assert ("Hand a party to another site" in page, "Cancel this therapy" in page) == forms


def test_a_maker_cannot_hand_a_party_over(app, api, network):
    therapy = _enrolled(api, network)
    maker = signed_in(app, "mfg1")
    refused = maker.post(
        f"/therapies/{therapy['id']}/parties",
        data={
            "party": "manufacturing",
            "site": "MFG-2",
            "reason_code": "CAPACITY",
            "csrf_token": csrf(maker, f"/therapies/{therapy['id']}"),
        },
    )
    assert refused.status_code == 403
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["parties"]["manufacturing"] == "MFG-1"


def test_a_therapy_is_cancelled_with_a_reason_code(app, api, network):
    therapy = _enrolled(api, network)
    coordinator = signed_in(app, "coord")
    page = _text(coordinator, f"/therapies/{therapy['id']}")
    form = _section(page, "cancel-title")
    assert '<option value="PATIENT_WITHDREW">' in form and '<option value="EQUIPMENT_FAILURE">' not in form
    refused = _post(
        coordinator, f"/therapies/{therapy['id']}/cancel", f"/therapies/{therapy['id']}", reason_code="OTHER"
    )
    assert "Not cancelled: With the reason code OTHER, say the reason in 'reason'." in refused
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["status"] == "active"
    done = _post(
        coordinator,
        f"/therapies/{therapy['id']}/cancel",
        f"/therapies/{therapy['id']}",
        reason_code="PATIENT_WITHDREW",
    )
    assert "The therapy was cancelled" in done
    assert _therapy(api, network["coord"], therapy["id"]).get_json()["status"] == "cancelled"
