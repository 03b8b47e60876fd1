"""The main pages at 1280x800 and on a tablet: nothing runs off the side; screenshots for the README.

With TETHER_UPDATE_SCREENSHOTS=1 (`make screenshots`) each page checked is also captured, replacing its picture
in docs/screenshots/; otherwise nothing is captured (a full-page capture costs the browser more than the check).
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from server.demo_data import form_data

from ..conftest import ROOT
from .people import fill_form, log_in

TABLET = {"width": 768, "height": 1024}


@pytest.fixture
def shots() -> Path | None:
    """Where screenshots are written (None: they are not taken)."""
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        folder = ROOT / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return None


WIDE = """() => { const width = window.innerWidth; const out = [];
  for (const el of document.querySelectorAll('body *')) { const box = el.getBoundingClientRect();
    const parent = el.parentElement ? el.parentElement.getBoundingClientRect() : null;
    if (box.right > width + 1 && box.width > 0 && (!parent || parent.right <= width + 1))
      { const near = el.closest('[data-testid], [id]');
        out.push(el.tagName.toLowerCase() + (typeof el.className === 'string' && el.className ? '.' + el.className : '')
                 + (near ? ' in ' + (near.dataset.testid || near.id) : '') + ' ends at ' + Math.round(box.right)); }
  } return out.slice(0, 10); }"""


def _shoot(page: Page, folder: Path | None, name: str, full_page: bool = True) -> None:
    """Check the page fits its window's width (naming what runs off it), then save a screenshot of it into
    ``folder`` (none without one)."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: {overflow}px wider than the window: {page.evaluate(WIDE)}"
    if folder is None:
        return
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)
    assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _therapy_at_release(served) -> tuple[str, str, str]:
    """A new therapy driven through the API to QA release; its id, patient reference and COI."""
    patient = f"PT-SHOT-{uuid.uuid4().hex[:4]}"
    therapy = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={
            "process_key": "autologous_car_t",
            "site": "SITE-A",
            "patient": {"reference": patient},
            "parties": {"manufacturing": "MFG-1", "logistics": "COURIER-1"},
        },
    ).json()
    steps = [
        ("coordinator", "Task_Enrolment"),
        ("coordinator", "Task_Scheduling"),
        ("coordinator", "Task_Apheresis"),
        "courier.picked_up",
        "shipment.delivered",
        ("manufacturing", "Task_ReceiveAtManufacturing"),
        "mes.manufacturing_started",
        "mes.manufacturing_completed",
        "qc.results",
    ]
    for step in steps:
        if isinstance(step, str):
            payload = {"result": "pass"} if step == "qc.results" else {"ref": "R-1", "tracking": "CC-1", "batch": "B-1"}
            answer = served.api(
                "integrator", "POST", "/messages", json={"name": step, "therapy_id": therapy["id"], "payload": payload}
            )
        else:
            user, activity = step
            task = next(
                t
                for t in served.api(user, "GET", f"/tasks?therapy_id={therapy['id']}").json()["items"]
                if t["activity_id"] == activity
            )
            answer = served.api(
                user,
                "POST",
                f"/tasks/{task['id']}/complete",
                json={"data": form_data(task["form"]["name"], therapy["coi"])},
            )
        assert answer.status_code == 200, answer.text
    return therapy["id"], patient, therapy["coi"]


def _capacity_booked(served, therapy_id: str) -> str:
    """A week of MFG-1's manufacturing capacity far ahead (its Monday), the therapy booked on its Tuesday."""
    today = date.today()
    monday = today + timedelta(days=7 * 30 - today.weekday())
    opened = served.api(
        "planner",
        "POST",
        "/capacity",
        json={
            "site": "MFG-1",
            "kind": "manufacturing",
            "start": f"{monday.isoformat()}T08:00:00Z",
            "end": f"{monday.isoformat()}T16:00:00Z",
            "capacity": 2,
            "recurrence": "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=5",
        },
    )
    assert opened.status_code == 201, opened.text
    tuesday = opened.json()["slots"][1]["id"]
    booked = served.api("coordinator", "POST", f"/therapies/{therapy_id}/bookings", json={"slot_id": tuesday})
    assert booked.status_code == 201, booked.text
    return monday.isoformat()


def test_main_pages_fit_the_window(page, new_page, served, shots):
    therapy_id, patient, coi = _therapy_at_release(served)
    week = _capacity_booked(served, therapy_id)
    page.goto("/login")
    _shoot(page, shots, "login")

    log_in(page, "coordinator", served.password)
    page.goto("/tasks")
    expect(page.get_by_test_id("inbox")).to_be_visible()
    _shoot(page, shots, "inbox")
    page.get_by_role("link", name="Enrol patient").first.click()
    fill_form(page, form_data("enrolment.schema.json"), skip=("payer_authorisation_reference", "indication"))
    page.get_by_label("Indication").fill("Relapsed/refractory DLBCL")
    page.get_by_role("button", name="Complete task").click()
    expect(page.locator("[data-field='payer_authorisation_reference'] .error")).to_be_visible()
    _shoot(page, shots, "task-form-errors")
    page.set_viewport_size(TABLET)
    _shoot(page, shots, "task-form-tablet")
    page.set_viewport_size({"width": 1280, "height": 800})

    page.goto(f"/therapies/{therapy_id}")
    expect(page.locator("[data-diagram]")).to_have_attribute("data-rendered", "true")
    _shoot(page, shots, "therapy")
    page.set_viewport_size(TABLET)
    _shoot(page, shots, "therapy-tablet", full_page=False)

    quality = new_page()
    log_in(quality, "qa", served.password)
    quality.goto(f"/tasks?therapy={coi}")
    quality.get_by_role("link", name="Release batch (QA)").click()
    expect(quality.get_by_test_id("signature-meaning")).to_have_text("approval")
    _shoot(quality, shots, "task-signature")

    admin = new_page()
    log_in(admin, "admin", served.password)
    admin.goto("/dashboard")
    expect(admin.get_by_test_id("therapy-table")).to_contain_text(patient)
    _shoot(admin, shots, "dashboard")
    admin.goto("/alerts?status=all")
    _shoot(admin, shots, "alerts", full_page=False)
    admin.goto("/definitions")
    _shoot(admin, shots, "definitions")
    admin.goto("/definitions/autologous_car_t/versions/1")
    expect(admin.locator("[data-diagram]")).to_have_attribute("data-rendered", "true")
    _shoot(admin, shots, "definition-version")
    admin.goto("/definitions/autologous_car_t/migrate")
    _shoot(admin, shots, "migrate", full_page=False)
    admin.goto("/reports")
    expect(admin.locator("canvas").first).to_be_visible()
    _shoot(admin, shots, "reports", full_page=False)
    draft = served.api("admin", "POST", "/process-drafts", json={"key": "autologous_car_t"})
    assert draft.status_code == 201, draft.text
    admin.goto(f"/studio/{draft.json()['id']}")
    expect(admin.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    admin.evaluate(
        "() => { const m = window.tetherStudio.modeler; const r = m.get('elementRegistry');"
        " const c = m.get('canvas'); c.zoom(0.8); c.scrollToElement(r.get('Task_Enrolment'), 150);"
        " m.get('selection').select(r.get('Task_Enrolment')); }"
    )
    phase = admin.get_by_test_id("studio-panel").get_by_label("Condition range (°C)", exact=True)
    phase.fill("warm")
    phase.press("Enter")
    expect(admin.get_by_test_id("studio-status")).to_have_attribute("data-state", "problems")
    expect(admin.get_by_test_id("studio-pin")).to_be_visible()
    _shoot(admin, shots, "studio")
    # Tried once with a slow infusion: the path painted with simulated times, the escalation and vein-to-vein.
    phase.fill("")
    phase.press("Enter")
    expect(admin.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    infusion = admin.get_by_test_id("try-durations").locator("tr[data-step='Task_RecordInfusion'] input")
    infusion.first.fill("2")
    infusion.last.fill("2")
    admin.get_by_test_id("try-run").click()
    expect(admin.get_by_test_id("studio-try")).to_have_attribute("data-tried", "once", timeout=30_000)
    admin.evaluate(
        "() => { const m = window.tetherStudio.modeler; const c = m.get('canvas'); c.zoom(0.9);"
        " c.scrollToElement(m.get('elementRegistry').get('Task_RecordInfusion'), 60);"
        " m.get('selection').select([]); window.scrollTo(0, 0); }"
    )
    _shoot(admin, shots, "studio-try", full_page=False)
    # A batch of 100 therapies with manufacturing starting 1 to 10 days after the receipt: the histogram.
    admin.get_by_test_id("try-durations").locator("tr[data-step='Event_ManufacturingStarted'] input").first.fill("24")
    admin.get_by_test_id("try-durations").locator("tr[data-step='Event_ManufacturingStarted'] input").last.fill("240")
    infusion.first.fill("0")
    infusion.last.fill("1")
    admin.get_by_test_id("try-batch").click()
    expect(admin.get_by_test_id("studio-try")).to_have_attribute("data-tried", "batch", timeout=90_000)
    admin.get_by_test_id("try-batch-summary").evaluate("(node) => node.scrollIntoView({block: 'start'})")
    _shoot(admin, shots, "studio-try-batch", full_page=False)

    planner = new_page()
    log_in(planner, "planner", served.password)
    planner.goto(f"/capacity?site=MFG-1&week={week}")
    expect(planner.get_by_test_id("calendar").get_by_role("link")).to_have_count(1)
    _shoot(planner, shots, "capacity")

    auditor = new_page()
    log_in(auditor, "auditor", served.password)
    auditor.goto(f"/audit?therapy={patient}")
    auditor.get_by_role("button", name="Verify the whole chain").click()
    expect(auditor.get_by_test_id("verification")).to_contain_text("The chain is intact")
    _shoot(auditor, shots, "audit", full_page=False)


PHONE = {"width": 375, "height": 812}


def test_the_decision_table_editor_fits_the_window(page, served, shots):
    """The studio's DMN editor on the autologous diagram's infusion window table (kept with a draft of it)."""
    log_in(page, "designer", served.password)
    draft = served.api("designer", "POST", "/process-drafts", json={"key": "autologous_car_t"})
    assert draft.status_code == 201, draft.text
    assert draft.json()["decisions"] == ["infusion-window.dmn"]
    page.goto(f"/studio/{draft.json()['id']}")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    page.evaluate(
        "() => { const m = window.tetherStudio.modeler; const r = m.get('elementRegistry');"
        " m.get('canvas').scrollToElement(r.get('Rule_InfusionWindow'), 150);"
        " m.get('selection').select(r.get('Rule_InfusionWindow')); }"
    )
    page.get_by_test_id("studio-edit-decision").click()
    editor = page.get_by_test_id("studio-dmn")
    expect(editor).to_have_attribute("data-open", "infusion_window")
    expect(editor.locator(".tjs-table tbody tr").first).to_be_visible()
    _shoot(page, shots, "studio-dmn", full_page=False)


def test_every_page_fits_a_phone(new_page, served, shots):
    """Each page at 375 px wide, as its users would open it: nothing runs off the side (tables scroll inside
    their box); with ``make screenshots``, a picture of each (``<name>-phone.png``)."""
    therapy_id, patient, coi = _therapy_at_release(served)
    page = new_page(PHONE)
    context = page.context
    page.goto("/login")
    _shoot(page, shots, "login-phone")
    pages = {
        "coordinator": [
            ("inbox-phone", "/tasks"),
            ("dashboard-phone", "/dashboard"),
            ("therapy-phone", f"/therapies/{therapy_id}"),
            ("alerts-phone", "/alerts"),
            ("reports-phone", "/reports"),
        ],
        "qa": [("task-signature-phone", None)],
        "planner": [("capacity-phone", "/capacity?site=MFG-1")],
        "designer": [
            ("definitions-phone", "/definitions"),
            ("definition-version-phone", "/definitions/autologous_car_t/versions/1"),
            ("migrate-phone", "/definitions/autologous_car_t/migrate"),
            ("studio-phone", "/studio"),
        ],
        "auditor": [("audit-phone", f"/audit?therapy={patient}")],
    }
    for user, visits in pages.items():
        context.clear_cookies()
        log_in(page, user, served.password)
        for name, path in visits:
            if path is None:  # the QA release of the therapy
                page.goto(f"/tasks?therapy={coi}")
                page.get_by_role("link", name="Release batch (QA)").click()
            else:
                page.goto(path)
            if page.locator("[data-diagram]").count():
                expect(page.locator("[data-diagram]").first).to_have_attribute("data-rendered", "true")
            _shoot(page, shots, name, full_page=False)
