"""Done when: a coordinator runs a therapy of the bundled process from enrolment to infusion in the browser.

Couriers and the MES post their messages through the API, as integrators do; manufacturing receives the
material and QA signs the release in their own browsers.
"""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from server.demo_data import form_data

from .people import fill_form, log_in


def _complete_current_task(page: Page, served, user: str, coi: str, name: str, skip=(), signature=False) -> None:
    """On a task page: answer its form with valid data and complete it."""
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    task_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    form = served.api(user, "GET", f"/tasks/{task_id}").json()["form"]["name"]
    fill_form(page, form_data(form, coi), skip=skip)
    if signature:
        page.get_by_label(re.compile("I sign this record with the meaning")).check()
        page.get_by_label("Your password").fill(served.password)
        page.get_by_role("button", name="Sign and complete").click()
    else:
        page.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text(f"Completed: {name}")


def _messages(served, therapy_id: str, *names: str) -> None:
    payloads = {
        "courier.picked_up": {"courier": "ColdChain", "tracking": "CC-1"},
        "mes.manufacturing_started": {"batch": "B-1"},
        "mes.manufacturing_completed": {"batch": "B-1"},
        "qc.results": {"result": "pass", "report": "QC-1"},
    }
    for name in names:
        answer = served.api(
            "integrator",
            "POST",
            "/messages",
            json={"name": name, "therapy_id": therapy_id, "payload": payloads.get(name, {"ref": "X"})},
        )
        assert answer.status_code == 200, answer.text


def _scan(page: Page, label: str) -> None:
    """A barcode scanner types the label's content quickly and ends with Enter."""
    scan = page.locator("[name='data.scanned_coi']")
    scan.click()
    page.keyboard.type(label, delay=5)
    page.keyboard.press("Enter")


def test_coordinator_runs_a_therapy_from_enrolment_to_infusion_in_the_browser(page, new_page, served):
    patient = f"PT-E2E-{uuid.uuid4().hex[:6]}"
    log_in(page, "coordinator", served.password)
    page.goto("/dashboard")
    page.get_by_label("Process", exact=True).last.select_option("autologous_car_t")
    page.locator("#start-site").select_option("SITE-A")
    page.locator("#start-manufacturing").select_option("MFG-1")
    page.locator("#start-logistics").select_option("COURIER-1")
    page.get_by_label(re.compile("Patient reference")).fill(patient)
    page.get_by_role("button", name="Start therapy").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Therapy {patient}")
    eye_readable = page.get_by_test_id("coi").inner_text().strip()
    coi = eye_readable.split()[0]
    therapy_id = page.url.rsplit("/", 1)[-1]

    page.get_by_role("link", name="Enrol patient").click()
    for name in ("Enrol patient", "Schedule apheresis and manufacturing slot", "Collect cells and label bag"):
        _complete_current_task(page, served, "coordinator", coi, name)  # each opens the next of this therapy
    expect(page).to_have_url(re.compile(r"/tasks$"))
    _messages(served, therapy_id, "courier.picked_up", "shipment.delivered")

    maker = new_page()
    log_in(maker, "manufacturing", served.password)
    maker.goto(f"/tasks?therapy={coi}")  # MFG-1 does not know the patient: it finds the COI
    maker.get_by_role("link", name="Receive material at manufacturing").click()
    _scan(maker, f"&/{coi}")
    expect(maker.get_by_label("Received at")).to_be_focused()  # Enter moved on; nothing was sent
    expect(maker.locator("[data-scan-status]")).to_have_text("✓ Matches this therapy's COI.")
    _complete_current_task(
        maker, served, "manufacturing", coi, "Receive material at manufacturing", skip=("scanned_coi",)
    )
    _messages(served, therapy_id, "mes.manufacturing_started", "mes.manufacturing_completed", "qc.results")

    quality = new_page()
    log_in(quality, "qa", served.password)
    quality.goto(f"/tasks?therapy={coi}")
    quality.get_by_role("link", name="Release batch (QA)").click()
    _complete_current_task(quality, served, "qa", coi, "Release batch (QA)", signature=True)
    _messages(served, therapy_id, "return.picked_up", "return.delivered")

    page.goto(f"/tasks?therapy={patient}")
    page.get_by_role("link", name="Receive and store product").click()
    _scan(page, eye_readable)
    _complete_current_task(page, served, "coordinator", coi, "Receive and store product", skip=("scanned_coi",))
    for name in ("Confirm product availability", "Start lymphodepletion"):
        _complete_current_task(page, served, "coordinator", coi, name)
    _scan(page, f"&/{coi}")
    _complete_current_task(page, served, "coordinator", coi, "Bedside identity check and thaw", skip=("scanned_coi",))
    _complete_current_task(page, served, "coordinator", coi, "Record infusion")

    page.goto(f"/therapies/{therapy_id}")
    expect(page.get_by_test_id("therapy-stage")).to_have_text("Waiting: Day 28 after infusion")
    expect(page.get_by_test_id("waits")).to_contain_text("due")
    expect(page.get_by_test_id("vein-to-vein")).not_to_contain_text("running")
    expect(page.get_by_test_id("open-tasks")).to_have_count(0)
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("signed by Quinn Quality (approval)")
    signatures = page.get_by_test_id("signatures")
    expect(signatures).to_contain_text("Quinn Quality (qa)")
    expect(signatures).to_contain_text("meaning “approval” on “Release batch (QA)”")
    expect(signatures.locator(".badge")).to_have_text("valid")
    expect(timeline).to_contain_text("Record infusion")
    expect(page.locator("[data-diagram]")).to_have_attribute("data-rendered", "true")
    expect(page.locator(".djs-element.tether-done[data-element-id='Task_RecordInfusion']")).to_have_count(1)
    expect(page.locator(".djs-element.tether-current")).not_to_have_count(0)
