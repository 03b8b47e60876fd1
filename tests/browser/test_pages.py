"""The pages in a real browser: login, a form task, a signed release, the live control tower, uploads."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from server.demo_data import form_data

from ..conftest import ROOT
from .people import fill_form, log_in, open_task


def _start_therapy(served, patient: str, site: str = "SITE-A") -> dict:
    answer = served.api(
        "coordinator" if site == "SITE-A" else "coordinator-b",
        "POST",
        "/therapies",
        json={"process_key": "autologous_car_t", "site": site, "patient": {"reference": patient}},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_login_shows_who_you_are_and_refuses_a_wrong_password(page, served):
    page.goto("/tasks")
    expect(page).to_have_url(re.compile(r"/login\?next=/tasks"))
    page.get_by_label("User name").fill("coordinator")
    page.get_by_label("Password").fill("not-the-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("The username or password is wrong, or the account is locked.")

    page.get_by_label("Password").fill(served.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/tasks$"))
    who = page.get_by_test_id("who")
    expect(who).to_contain_text("Chris Coordinator")
    expect(who).to_contain_text("coordinator")
    expect(who).to_contain_text("SITE-A")
    cookie = next(c for c in page.context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/tasks")
    expect(page).to_have_url(re.compile(r"/login"))


def test_logins_are_in_the_audit_trail(page, served):
    page.goto("/login")
    page.get_by_label("User name").fill("auditor")
    page.get_by_label("Password").fill("not-the-password-2")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong")
    log_in(page, "auditor", served.password)
    page.goto("/audit?action=login.failed")
    expect(page.get_by_test_id("audit-entries")).to_contain_text("login.failed")
    page.goto("/audit?action=login.succeeded")
    expect(page.get_by_test_id("audit-entries")).to_contain_text('"channel": "web"')


def test_form_task_shows_errors_next_to_fields_then_completes(page, served):
    patient = f"PT-W-{uuid.uuid4().hex[:6]}"
    _start_therapy(served, patient)
    log_in(page, "coordinator", served.password)
    open_task(page, patient, "Enrol patient")
    expect(page.get_by_text("Confirm that the patient has signed informed consent")).to_be_visible()
    expect(page.get_by_role("group", name=re.compile("^Payer authorisation"))).to_be_visible()
    expect(page.get_by_role("radio", name="Approved by the payer")).to_be_visible()

    # In the page: nothing is sent while required answers are missing.
    page.get_by_role("button", name="Complete task").click()
    indication = page.locator("[data-field='indication']")
    expect(indication.locator(".error")).to_have_text("This field is required.")
    expect(page.locator("[data-field='consent_obtained'] .error")).to_have_text("Tick this box to confirm.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Enrol patient")

    # On the server: the schema's conditional rule (a reference when the payer approved) is checked there.
    fill_form(page, form_data("enrolment.schema.json"), skip=("payer_authorisation_reference",))
    page.get_by_role("button", name="Complete task").click()
    reference = page.locator("[data-field='payer_authorisation_reference']")
    expect(reference.locator(".error")).to_have_text("This field is required.")
    expect(page.get_by_label("Indication")).to_have_value("Relapsed/refractory DLBCL")  # answers kept

    page.get_by_label("Payer authorisation reference").fill("PA-7")
    page.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text("Completed: Enrol patient")
    expect(page.get_by_role("heading", level=1)).to_have_text("Schedule apheresis and manufacturing slot")
    page.goto(f"/tasks?therapy={patient}")
    expect(page.get_by_test_id("inbox")).not_to_contain_text("Enrol patient")


def test_qa_signs_a_batch_release(page, served):
    therapies = served.api("admin", "GET", "/therapies?site=SITE-B").json()["items"]
    therapy = next(t for t in therapies if t["patient"]["reference"] == "PT-B-0002")
    log_in(page, "qa", served.password)
    open_task(page, therapy["coi"], "Release batch (QA)")  # QA does not know the patient: it finds the COI
    expect(page.get_by_test_id("signature-meaning")).to_have_text("approval")
    fill_form(page, form_data("qa-release.schema.json"))

    page.get_by_role("button", name="Sign and complete").click()  # no password, meaning not confirmed
    expect(page.locator("#signature-error")).to_have_text(
        "Confirm the meaning of your signature. Enter your password to sign."
    )

    page.get_by_label("I sign this record with the meaning “approval”").check()
    page.get_by_label("Your password").fill("not-my-password-1")
    page.get_by_role("button", name="Sign and complete").click()
    expect(page.locator("#signature-error")).to_contain_text("password is wrong")

    page.get_by_label("I sign this record with the meaning “approval”").check()
    page.get_by_label("Your password").fill(served.password)
    page.get_by_role("button", name="Sign and complete").click()
    expect(page.get_by_role("status")).to_contain_text("Completed: Release batch (QA) (withheld).")
    page.goto(f"/therapies/{therapy['id']}")
    expect(page.get_by_test_id("timeline")).to_contain_text("signed by Quinn Quality (approval)")
    expect(page.get_by_test_id("therapy-stage")).to_contain_text("Waiting")


def test_control_tower_updates_live_after_an_api_call(page, served):
    log_in(page, "coordinator", served.password)
    page.goto("/dashboard")
    table = page.get_by_test_id("therapy-table")
    expect(table).to_contain_text("PT-A-0001")
    expect(page.locator("[data-live-status]")).to_contain_text("Live: checking every 3 s")
    page.evaluate("window.stillTheSamePage = true")
    patient = f"PT-LIVE-{uuid.uuid4().hex[:6]}"
    _start_therapy(served, patient)
    _start_therapy(served, f"PT-OTHER-{uuid.uuid4().hex[:6]}", site="SITE-B")  # not this coordinator's site
    row = table.locator("tr", has_text=patient)
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator("[data-col='stage']")).to_have_text("Enrol patient")
    expect(page.get_by_test_id("stage-counts").locator("[data-chip='referral']")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True
    expect(table).not_to_contain_text("PT-OTHER-")

    page.locator("#filter-site").select_option("SITE-A")
    page.locator("#filter-status").select_option("completed")
    page.get_by_role("button", name="Filter").click()
    expect(table).to_contain_text("PT-A-0006")
    expect(table).not_to_contain_text(patient)


def test_designer_uploads_a_broken_then_a_valid_diagram(page, served):
    source = (ROOT / "processes" / "allogeneic.bpmn").read_text()
    broken = source.replace('serviceTaskOperator id="notify"', 'serviceTaskOperator id="fax.send"', 1)
    valid = source.replace('name="Allogeneic off-the-shelf"', 'name="Allogeneic off-the-shelf (rev B)"', 1)
    log_in(page, "designer", served.password)
    expect(page).to_have_url(re.compile(r"/definitions$"))

    page.get_by_label("BPMN diagram").set_input_files(
        files=[{"name": "allogeneic-broken.bpmn", "mimeType": "application/xml", "buffer": broken.encode()}]
    )
    page.get_by_role("button", name="Deploy").click()
    error = page.get_by_test_id("upload-error")
    expect(error).to_contain_text("allogeneic-broken.bpmn was not deployed")
    expect(error).to_contain_text("fax.send")
    expect(page.get_by_test_id("upload-error-element")).to_have_text(re.compile(r"\S+"))
    expect(page.get_by_test_id("upload-error-line")).to_have_text(re.compile(r"^\d+$"))

    page.get_by_label("BPMN diagram").set_input_files(
        files=[{"name": "allogeneic-rev-b.bpmn", "mimeType": "application/xml", "buffer": valid.encode()}]
    )
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("status")).to_contain_text("Deployed: Allogeneic off-the-shelf version 2")
    expect(page.locator("[data-diagram]")).to_have_attribute("data-rendered", "true")
    expect(page.locator(".djs-element[data-element-id='Task_OrderFromInventory']")).to_be_visible()
    page.goto("/definitions/allogeneic")
    expect(page.get_by_test_id("versions")).to_contain_text("v2")


def test_alert_acknowledged_with_a_note(page, served):
    patient = f"PT-AL-{uuid.uuid4().hex[:6]}"
    therapy = _start_therapy(served, patient)
    for _ in ("enrolment", "scheduling"):  # booking the slot notifies manufacturing: an open alert
        task = served.api("coordinator", "GET", f"/tasks?therapy_id={therapy['id']}").json()["items"][0]
        done = served.api(
            "coordinator",
            "POST",
            f"/tasks/{task['id']}/complete",
            json={"data": form_data(task["form"]["name"], therapy["coi"])},
        )
        assert done.status_code == 200, done.text
    log_in(page, "coordinator", served.password)
    page.goto("/alerts?scope=all")  # the notification is for manufacturing: not among the coordinator's own
    item = page.locator("[data-testid='alerts'] > li", has_text=patient).first
    expect(item).to_be_visible()
    alert_id = item.get_attribute("data-alert-id")
    item.get_by_label("Note: what was done").fill("Slot confirmed by phone")
    item.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_have_text("Alert acknowledged.")
    expect(page.locator(f"[data-alert-id='{alert_id}']")).to_have_count(0)
    page.goto("/alerts?status=acknowledged&scope=all")
    expect(page.locator(f"[data-alert-id='{alert_id}']")).to_contain_text("Acknowledged by coordinator")
    expect(page.locator(f"[data-alert-id='{alert_id}']")).to_contain_text("Slot confirmed by phone")
