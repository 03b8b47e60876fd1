"""The studio in the browser: a designer models a small process from an empty canvas with the palette and the
properties panel, sees a problem pinned on its element, fixes it, previews its form, tries it, deploys, and a therapy
starts on it."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from ..conftest import ROOT
from .people import log_in


def _panel_select(page: Page, label: str, value: str) -> None:
    page.get_by_test_id("studio-panel").get_by_label(label, exact=True).select_option(value)


def _wait_checked(page: Page) -> None:
    expect(page.get_by_test_id("studio-status")).not_to_have_text("Checking…")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "(ok|problems)")


def _element(page: Page, element_id: str):
    return page.locator(f"[data-studio-canvas] .djs-element[data-element-id='{element_id}']")


def _select(page: Page, element_id: str) -> None:
    """Select an element of the diagram by clicking it, as a person does (a click on the selected element would
    deselect it), and wait for the panel to show it."""
    heading = page.get_by_test_id("studio-panel").locator("h3").first
    if element_id not in heading.inner_text():
        box = _element(page, element_id).locator(".djs-hit").first.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(heading).to_contain_text(element_id)


def test_a_designer_models_checks_fixes_and_deploys_a_process_from_an_empty_canvas(page, served):
    suffix = uuid.uuid4().hex[:6]
    key = f"studio_trial_{suffix}"
    log_in(page, "designer", served.password)
    page.goto("/studio")
    page.get_by_label("Name").fill(f"Studio trial {suffix}")
    page.get_by_role("button", name="Start a draft").click()
    expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")
    expect(page.get_by_test_id("studio-panel")).to_contain_text(key)

    # A pool from the palette, around the start event.
    page.locator(".djs-palette .entry[data-action='create.participant-expanded']").click()
    page.locator("[data-studio-canvas]").click(position={"x": 300, "y": 200})
    # A task appended to the start event, made a user task in the panel.
    _select(page, "StartEvent_1")
    page.locator(".djs-context-pad .entry[data-action='append.append-task']").click()
    page.keyboard.press("Escape")
    _panel_select(page, "Kind", "bpmn:UserTask")
    task_id = page.evaluate(
        "() => window.tetherStudio.modeler.get('elementRegistry').filter(e => e.type === 'bpmn:UserTask')[0].id"
    )
    # Checked as it is drawn: the user task sits in no lane, and the problem is pinned on it.
    pin = page.locator(f"[data-testid='studio-pin'][data-element='{task_id}']")
    expect(pin).to_be_visible()
    expect(page.get_by_test_id("studio-problems")).to_contain_text(task_id)
    expect(page.get_by_test_id("studio-deploy")).to_be_disabled()
    expect(page.get_by_test_id("deploy-why")).to_contain_text("Cannot deploy")

    # Fixed in the panel: its role (a lane around it), a form, instructions; then an end event.
    _select(page, task_id)
    _panel_select(page, "Role (its lane)", "Coordinator")
    _select(page, task_id)
    _panel_select(page, "Form", "enrolment.schema.json")
    page.get_by_test_id("studio-panel").get_by_label("Instructions").fill("Check consent.")
    page.get_by_test_id("studio-panel").get_by_label("Instructions").press("Tab")
    # The form as site staff will see it, filled with its example.
    with page.context.expect_page() as opened:
        page.get_by_test_id("studio-form-preview").click()
    preview = opened.value
    expect(preview.get_by_test_id("form-preview")).to_be_visible()
    expect(preview.locator("[name='data.consent_date']")).to_have_value("2026-11-02")
    preview.close()
    _select(page, task_id)
    page.locator(".djs-context-pad .entry[data-action='append.end-event']").click()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    expect(pin).to_have_count(0)
    expect(page.get_by_test_id("studio-diff")).to_contain_text("A new process")

    # Tried before any patient depends on it: the task completed with the form's example on a simulated clock.
    page.get_by_test_id("try-run").click()
    expect(page.get_by_test_id("studio-try")).to_have_attribute("data-tried", "once", timeout=30_000)
    expect(page.get_by_test_id("try-status")).to_contain_text("Run done: completed")
    passed = page.locator(f"[data-studio-canvas] .djs-element.try-passed[data-element-id='{task_id}']")
    expect(passed).to_have_count(1)

    therapy = deploy_and_start(page, served, key, f"PT-S-{suffix}")
    tasks = served.api("coordinator", "GET", f"/tasks?therapy_id={therapy}").json()["items"]
    assert [t["activity_id"] for t in tasks] == [task_id]


def test_a_deployed_version_opened_in_the_studio_shows_its_diff_and_offers_the_migration(page, served):
    suffix = uuid.uuid4().hex[:6]
    key = f"small_studio_{suffix}"
    bpmn = (ROOT / "tests" / "fixtures" / "studio-small.bpmn").read_text().replace("small_process", key)
    uploaded = served.api("designer", "POST", "/process-definitions", files=[("bpmn", ("small.bpmn", bpmn))])
    assert uploaded.status_code == 201, uploaded.text
    started = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={"process_key": key, "site": "SITE-A", "patient": {"reference": f"PT-M-{suffix}"}},
    )
    assert started.status_code == 201, started.text

    log_in(page, "designer", served.password)
    page.goto(f"/definitions/{key}/versions/1")
    page.get_by_test_id("open-in-studio").click()
    expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    expect(page.get_by_test_id("studio-diff")).to_contain_text("Changed: nothing")
    expect(page.get_by_test_id("studio-diff")).to_contain_text("1 therapies run on version 1")

    _select(page, "Task_Enrol")
    name = page.get_by_test_id("studio-panel").get_by_label("Name", exact=True)
    name.fill("Enrol the patient")
    name.press("Enter")
    expect(page.get_by_test_id("studio-diff")).to_contain_text("Changed: Task_Enrol")
    expect(_element(page, "Task_Enrol")).to_have_class(re.compile("tether-changed"))

    page.get_by_test_id("studio-deploy").click()
    expect(page.get_by_test_id("studio-deployed")).to_contain_text(f"Deployed {key} version 2")
    page.get_by_test_id("studio-migrate").click()
    expect(page).to_have_url(re.compile(rf"/definitions/{key}/migrate\?from=1&to=2"))
    expect(page.locator("main")).to_contain_text("Task_Enrol")


def deploy_and_start(page: Page, served, key: str, reference: str) -> str:
    """Deploy the draft from the page (version 1 of ``key``), then start a therapy on it through the API: its id."""
    page.get_by_test_id("studio-deploy").click()
    expect(page.get_by_test_id("studio-deployed")).to_contain_text(f"Deployed {key} version 1")
    started = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={"process_key": key, "site": "SITE-A", "patient": {"reference": reference}},
    )
    assert started.status_code == 201, started.text
    return started.json()["id"]


def _append(page: Page, source_id: str, action: str) -> str:
    """Append an element to ``source_id`` from its context pad; the new element's id (it is selected)."""
    _select(page, source_id)
    page.locator(f".djs-context-pad .entry[data-action='{action}']").click()
    page.keyboard.press("Escape")
    return page.evaluate("() => window.tetherStudio.modeler.get('selection').get()[0].id")


def _fill(page: Page, label: str, value: str) -> None:
    box = page.get_by_test_id("studio-panel").get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")


def test_the_panel_writes_tethers_extensions_as_the_engine_reads_them(page, served):
    suffix = uuid.uuid4().hex[:6]
    key = f"panel_trial_{suffix}"
    created = served.api("designer", "POST", "/process-drafts", json={"name": f"Panel trial {suffix}"})
    assert created.status_code == 201, created.text
    draft_id = created.json()["id"]
    bpmn = (ROOT / "tests" / "fixtures" / "studio-small.bpmn").read_text().replace("small_process", key)
    assert served.api("designer", "PUT", f"/process-drafts/{draft_id}", json={"bpmn": bpmn}).status_code == 200

    log_in(page, "designer", served.password)
    page.goto(f"/studio/{draft_id}")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    _select(page, "Task_Enrol")
    _panel_select(page, "Party", "manufacturing")
    _fill(page, "Signature meaning", "approval")
    _fill(page, "Phase", "referral")
    _fill(page, "Condition range (°C)", "2..8")

    # The task goes on to a service task instead of the end (a task has one outgoing flow).
    _select(page, "End_Done")
    page.locator(".djs-context-pad .entry[data-action='delete']").click()
    service = _append(page, "Task_Enrol", "append.append-task")
    _panel_select(page, "Kind", "bpmn:ServiceTask")
    _panel_select(page, "Operator", "notify")
    _fill(page, "Result variable", "notified")
    expect(page.get_by_test_id("studio-problems")).to_contain_text("needs the parameters message, role")
    panel = page.get_by_test_id("studio-panel")
    expect(panel.get_by_label("severity", exact=True)).to_be_visible()  # every parameter notify takes, with its hint
    expect(panel.get_by_text("'low', 'medium' (default), 'high' or 'critical'")).to_be_visible()
    _fill(page, "role (required)", "'qa'")
    _fill(page, "message (required)", "'Enrolled'")
    _panel_select(page, "Operator", "publish")  # a change of mind: publish takes other parameters
    expect(panel.get_by_role("status")).to_have_text("publish does not take role, message. Remove them")
    panel.get_by_role("button", name="Remove them").click()
    expect(panel.get_by_role("status")).to_have_count(0)
    _panel_select(page, "Operator", "notify")
    _fill(page, "role (required)", "'qa'")
    _fill(page, "message (required)", "'Enrolled'")

    timer = _append(page, service, "append.intermediate-event")
    _panel_select(page, "Waits for", "timer")
    page.get_by_test_id("studio-panel").get_by_label("days", exact=True).fill("1")
    page.get_by_test_id("studio-panel").get_by_label("days", exact=True).press("Tab")
    page.get_by_test_id("studio-panel").get_by_label("hours", exact=True).fill("12")
    page.get_by_test_id("studio-panel").get_by_label("hours", exact=True).press("Tab")
    expect(page.get_by_test_id("studio-duration-iso")).to_have_text("ISO 8601: P1DT12H")

    message = _append(page, timer, "append.intermediate-event")
    _panel_select(page, "Waits for", "message")
    _fill(page, "Message name", "courier.picked_up")
    _panel_select(page, "Payload schema", "courier-picked-up.message.json")
    _fill(page, "Store the payload as", "pickup")
    _append(page, message, "append.end-event")

    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    page.get_by_test_id("studio-save").click()
    expect(page.locator("[data-studio-saved]")).to_have_text("Saved.")
    saved = served.api("designer", "GET", f"/process-drafts/{draft_id}").json()["bpmn"]
    for written in (
        '<spiffworkflow:property name="party" value="manufacturing"',
        '<spiffworkflow:property name="signature" value="approval"',
        '<spiffworkflow:property name="phase" value="referral"',
        '<spiffworkflow:property name="conditionRange" value="2..8"',
        '<spiffworkflow:serviceTaskOperator id="notify" resultVariable="notified"',
        '<spiffworkflow:parameter id="role" type="any" value="&#39;qa&#39;"',  # the quotes of a text literal
        ">P1DT12H</bpmn:timeDuration>",
        'name="courier.picked_up"',
        '<spiffworkflow:property name="payloadSchema" value="courier-picked-up.message.json"',
        "<spiffworkflow:messageVariable>pickup</spiffworkflow:messageVariable>",
    ):
        assert written in saved, written
    # What the engine read from it: the deployed version's user task and message.
    deployed = served.api("designer", "POST", f"/process-drafts/{draft_id}/deploy")
    assert deployed.status_code == 201, deployed.text
    messages = served.api("designer", "GET", f"/process-definitions/{key}/messages").json()["items"]
    assert [(m["name"], m["activity_id"], m["schema_file"]) for m in messages] == [
        ("courier.picked_up", message, "courier-picked-up.message.json")
    ]
