"""The studio's decision tables in the browser: a diagram written without a layout is laid out when opened; a
designer selects its business rule task, edits the task's decision table in the DMN editor (adds a rule), saves
it, the checks pass, deploys, and a therapy on the deployed version takes the new rule's outcome. A form file
chosen on the page is offered in the Form list; a save over someone else's newer save is refused and says so."""

from __future__ import annotations

import json
import uuid

from playwright.sync_api import Page, expect

from ..conftest import ROOT
from .people import log_in
from .test_studio import _select, deploy_and_start

FIXTURES = ROOT / "tests" / "fixtures"


def _draft_of_decision_diagram(served, suffix: str) -> tuple[str, str]:
    """A draft holding the decision fixture (no BPMN DI) under a new key, with its decision table; (id, key)."""
    key = f"decision_studio_{suffix}"
    bpmn = (FIXTURES / "decision.bpmn").read_text().replace("decision_therapy", key)
    created = served.api("designer", "POST", "/process-drafts", json={"name": f"Decisions {suffix}"})
    assert created.status_code == 201, created.text
    draft_id = created.json()["id"]
    saved = served.api("designer", "PUT", f"/process-drafts/{draft_id}", json={"bpmn": bpmn})
    assert saved.status_code == 200, saved.text
    table = (FIXTURES / "manufacturing-site.dmn").read_text()
    put = served.api(
        "designer",
        "PUT",
        f"/process-drafts/{draft_id}/decisions/site.dmn",
        data=table.encode(),
        headers={"Content-Type": "application/xml"},
    )
    assert put.status_code == 200, put.text
    return draft_id, key


def _open(page: Page, draft_id: str) -> None:
    page.goto(f"/studio/{draft_id}")
    expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")


def _type_in_cell(page: Page, cell, text: str) -> None:
    cell.click()
    page.keyboard.type(text)


def test_a_designer_edits_a_business_rule_tasks_table_deploys_and_a_therapy_takes_the_new_rule(page, served):
    suffix = uuid.uuid4().hex[:6]
    draft_id, key = _draft_of_decision_diagram(served, suffix)
    log_in(page, "designer", served.password)
    _open(page, draft_id)
    # Written without a layout: laid out automatically, and the designer is told so.
    expect(page.get_by_test_id("studio-layout")).to_be_visible()
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")

    _select(page, "Rule_Site")
    expect(page.get_by_test_id("studio-panel").get_by_label("Decision id")).to_have_value("manufacturing_site")
    page.get_by_test_id("studio-edit-decision").click()
    editor = page.get_by_test_id("studio-dmn")
    expect(editor).to_have_attribute("data-open", "manufacturing_site")
    rows = editor.locator(".tjs-table tbody tr")
    expect(rows).to_have_count(3)
    # A fourth rule: patients from the US go to MFG-9 whatever they weigh.
    editor.get_by_title("Add rule").click()
    expect(rows).to_have_count(4)
    cells = rows.nth(3).locator("td.input-cell, td.output-cell")
    for column, text in enumerate(['"US"', "-", '"MFG-9"', '"high"']):
        _type_in_cell(page, cells.nth(column), text)
    page.get_by_test_id("studio-dmn-save").click()
    expect(page.get_by_test_id("studio-dmn-status")).to_have_attribute("data-state", "saved")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    expect(page.get_by_test_id("studio-files")).to_contain_text("site.dmn")

    therapy = deploy_and_start(page, served, key, f"PT-D-{suffix}")
    (task,) = served.api("coordinator", "GET", f"/tasks?therapy_id={therapy}").json()["items"]
    done = served.api(
        "coordinator", "POST", f"/tasks/{task['id']}/complete", json={"data": {"region": "US", "weight_kg": 900}}
    )
    assert done.status_code == 200, done.text
    data = served.api("coordinator", "GET", f"/therapies/{therapy}").json()["data"]
    assert data["manufacturing_site"] == "MFG-9" and data["dose"] == {"band": "high"}


def test_a_business_rule_task_without_a_table_gets_a_new_one_and_a_form_file_is_offered(page, served, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    draft_id, _key = _draft_of_decision_diagram(served, suffix)
    removed = served.api("designer", "DELETE", f"/process-drafts/{draft_id}/decisions/site.dmn")
    assert removed.status_code == 200, removed.text
    log_in(page, "designer", served.password)
    _open(page, draft_id)
    expect(page.get_by_test_id("studio-problems")).to_contain_text("Rule_Site")
    _select(page, "Rule_Site")
    page.get_by_test_id("studio-panel").get_by_label("Decision id").fill("")
    page.get_by_test_id("studio-panel").get_by_label("Decision id").press("Tab")
    _select(page, "Rule_Site")
    page.get_by_test_id("studio-edit-decision").click()
    editor = page.get_by_test_id("studio-dmn")
    expect(editor).to_have_attribute("data-open", "Rule_Site_decision")
    expect(editor).to_contain_text("new")
    page.get_by_test_id("studio-dmn-save").click()
    expect(page.get_by_test_id("studio-dmn-status")).to_have_attribute("data-state", "saved")
    expect(page.get_by_test_id("studio-files")).to_contain_text("Rule_Site_decision.dmn")
    expect(page.get_by_test_id("studio-problems")).not_to_contain_text("Rule_Site")

    # A form file chosen on the page: a bad one is refused with its line, a good one is offered in the Form list.
    bad = tmp_path / "broken.schema.json"
    bad.write_text('{"type":\n "object",, }')
    page.get_by_test_id("studio-form-file").set_input_files(str(bad))
    expect(page.get_by_test_id("studio-form-status")).to_contain_text("line 2")
    good = tmp_path / "measure.schema.json"
    good.write_text(json.dumps({"type": "object", "properties": {"region": {"type": "string"}}}))
    page.get_by_test_id("studio-form-file").set_input_files(str(good))
    expect(page.get_by_test_id("studio-form-status")).to_contain_text("Added measure.schema.json")
    page.locator("[data-studio-canvas]").scroll_into_view_if_needed()
    _select(page, "Task_Measure")
    form = page.get_by_test_id("studio-panel").get_by_label("Form", exact=True)
    form.select_option("measure.schema.json")
    expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")


def test_a_save_over_someone_elses_newer_save_is_refused_and_says_who(page, served):
    suffix = uuid.uuid4().hex[:6]
    draft_id, _key = _draft_of_decision_diagram(served, suffix)
    log_in(page, "designer", served.password)
    _open(page, draft_id)
    # Meanwhile an administrator saves the draft through the API.
    current = served.api("admin", "GET", f"/process-drafts/{draft_id}")
    changed = current.json()["bpmn"].replace("Confirm the site", "Confirm the manufacturing site")
    saved = served.api(
        "admin",
        "PUT",
        f"/process-drafts/{draft_id}",
        json={"bpmn": changed},
        headers={"If-Match": current.headers["ETag"]},
    )
    assert saved.status_code == 200, saved.text
    page.get_by_test_id("studio-save").click()
    stale = page.get_by_test_id("studio-stale")
    expect(stale).to_contain_text("Changed by admin since you opened it")
    expect(stale.get_by_role("link", name="Reload")).to_be_visible()
    again = served.api("designer", "GET", f"/process-drafts/{draft_id}").json()
    assert "Confirm the manufacturing site" in again["bpmn"]
    # After a reload the designer's save goes through.
    stale.get_by_role("link", name="Reload").click()
    expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")
    page.get_by_test_id("studio-save").click()
    expect(page.locator("[data-studio-saved]")).to_have_text("Saved.")
