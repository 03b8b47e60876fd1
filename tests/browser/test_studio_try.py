"""The studio's "Try it" in the browser: a designer opens a draft of the bundled autologous process, tries it once
(the path painted on the diagram with each step's simulated time, the vein-to-vein time, the escalation of a slow
infusion), forces a branch, then runs a batch and sees the histogram and how often each escalation fired."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .people import log_in
from .test_accessibility import describe, serious_violations


def _hours(page: Page, element_id: str, low: str, high: str) -> None:
    row = page.get_by_test_id("try-durations").locator(f"tr[data-step='{element_id}']")
    row.locator("input[data-end='low']").fill(low)
    row.locator("input[data-end='high']").fill(high)


def open_try(page: Page, served) -> None:
    draft = served.api("designer", "POST", "/process-drafts", json={"key": "autologous_car_t"})
    assert draft.status_code == 201, draft.text
    log_in(page, "designer", served.password)
    page.goto(f"/studio/{draft.json()['id']}")
    expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    expect(page.get_by_test_id("try-durations").locator("tr[data-step='Task_Apheresis']")).to_be_visible()


def test_a_designer_tries_a_draft_once_and_in_a_batch(page, served):
    open_try(page, served)
    try_it = page.get_by_test_id("studio-try")
    # Every user task is prefilled with one hour; a boundary message (a lost shipment) is left empty.
    apheresis = try_it.get_by_label("Least hours for Collect cells and label bag (Task_Apheresis)")
    expect(apheresis).to_have_value("1")
    expect(try_it.get_by_label("Least hours for Material lost in transit (Event_MaterialLost)")).to_have_value("")

    _hours(page, "Event_ManufacturingStarted", "48", "48")
    _hours(page, "Task_RecordInfusion", "2", "2")  # past the 30 minutes after the thaw: an escalation
    page.get_by_test_id("try-run").click()
    expect(try_it).to_have_attribute("data-tried", "once", timeout=30_000)
    expect(page.get_by_test_id("try-status")).to_contain_text("Run done: completed")
    # 4 h from the collection to the delivery at manufacturing and receipt, 48 h to the start, then an hour per
    # step to the bedside check (9 h) and 2 h to the infusion.
    expect(page.get_by_test_id("try-v2v")).to_have_text("62 h (2.58 days)")
    passed = page.locator("[data-studio-canvas] .djs-element.try-passed")
    expect(passed.first).to_be_visible()
    expect(
        page.locator("[data-studio-canvas] .djs-element.try-passed[data-element-id='Task_QaRelease']")
    ).to_have_count(1)
    expect(
        page.locator("[data-studio-canvas] .djs-element.try-passed[data-element-id='Task_PhysicianDecision']")
    ).to_have_count(0)
    expect(page.get_by_test_id("try-time").first).to_be_visible()
    expect(page.get_by_test_id("try-alerts")).to_contain_text("'Record infusion' is late")
    expect(page.get_by_test_id("try-events")).to_contain_text("Skipped in simulation")
    violations = serious_violations(page)
    assert not violations, describe(violations)

    # Forced branches: the batch rejected at release, and the physician ends the therapy.
    release = try_it.get_by_label("At Batch released? (Gateway_ReleaseDecision)")
    physician = try_it.get_by_label("At Physician decision? (Gateway_PhysicianDecision)")
    release.select_option(label="Rejected: to Out of specification")
    physician.select_option(label="End therapy: to Notify manufacturing: therapy ended")
    page.get_by_test_id("try-run").click()
    expect(page.get_by_test_id("try-output")).to_contain_text("Therapy ended (out of specification)")
    physician_task = "[data-studio-canvas] .djs-element.try-passed[data-element-id='Task_PhysicianDecision']"
    expect(page.locator(physician_task)).to_have_count(1)
    expect(page.get_by_test_id("try-v2v")).to_contain_text("none")
    release.select_option("")
    physician.select_option("")

    # A batch: infusions between 0 and 1 h after the thaw; about half are late.
    _hours(page, "Task_RecordInfusion", "0", "1")
    _hours(page, "Event_ManufacturingStarted", "24", "240")
    try_it.get_by_label("Runs").fill("40")
    try_it.get_by_label("Seed").fill("3")
    page.get_by_test_id("try-batch").click()
    expect(try_it).to_have_attribute("data-tried", "batch", timeout=90_000)
    expect(page.get_by_test_id("try-batch-summary")).to_contain_text("40 runs (seed 3)")
    expect(page.get_by_test_id("try-histogram")).to_be_visible()
    expect(page.get_by_test_id("try-histogram-table").locator("tbody tr")).to_have_count(10)
    escalations = page.get_by_test_id("try-escalations")
    expect(escalations).to_contain_text("Not infused within 30 min of thaw")
    expect(page.get_by_test_id("try-ends")).to_contain_text("Therapy completed")
    # Nothing of the painted single run stays on the diagram after the batch.
    expect(passed).to_have_count(0)
    violations = serious_violations(page)
    assert not violations, describe(violations)
