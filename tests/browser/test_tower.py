"""The control tower in a browser: it fits a phone's width, its chips filter, its search finds, and every open
tab stays live without holding the server."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from .people import log_in

PHONE = {"width": 375, "height": 740}


@pytest.mark.parametrize("username", ["coordinator", "admin"])
def test_the_tower_fits_a_phone_and_its_table_scrolls_in_its_box(new_page, served, username):
    page = new_page(PHONE)
    log_in(page, username, served.password)
    page.goto("/dashboard")
    table = page.get_by_test_id("therapy-table")
    expect(table).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # the table scrolls sideways inside its own box, the patient column staying in view
    box = page.locator(".table-scroll")
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")
    first = table.locator("tbody tr").first.locator("th[scope='row']")
    left = first.bounding_box()["x"]
    box.evaluate("b => { b.scrollLeft = 400; }")
    page.wait_for_timeout(100)
    assert abs(first.bounding_box()["x"] - left) < 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_a_chip_filters_by_phase_and_the_search_finds_a_coi(page, served):
    log_in(page, "coordinator", served.password)
    page.goto("/dashboard")
    chips = page.get_by_test_id("stage-counts")
    infusion = chips.locator("[data-chip='infusion']")
    expect(infusion).to_be_visible()
    count = int(infusion.locator(".n").inner_text())
    infusion.click()
    expect(page).to_have_url(re.compile(r"phase=infusion"))
    rows = page.get_by_test_id("therapy-table").locator("tbody tr")
    expect(rows).to_have_count(count)
    for phase in rows.locator("[data-col='phase'] .phase").all_inner_texts():
        assert phase == "Infusion"
    expect(chips.locator("[data-chip='infusion']")).to_have_attribute("aria-current", "true")
    chips.locator("[data-chip='infusion']").click()  # again: every phase
    expect(page).not_to_have_url(re.compile(r"phase="))

    coi = rows.first.locator("[data-col='coi']").inner_text()
    page.get_by_label("Search").fill(coi.lower())
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator("[data-col='coi']")).to_have_text(coi)


def test_ten_open_tabs_all_see_a_new_therapy(new_page, served):
    tabs = []
    for _ in range(10):
        tab = new_page()
        log_in(tab, "coordinator", served.password)
        tab.goto("/dashboard")
        expect(tab.locator("[data-live-status]")).to_contain_text("Live: checking every")
        tabs.append(tab)
    tabs.pop().context.close()  # a tab closed: it held nothing
    patient = f"PT-TABS-{uuid.uuid4().hex[:6]}"
    answer = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={"process_key": "autologous_car_t", "site": "SITE-A", "patient": {"reference": patient}},
    )
    assert answer.status_code == 201, answer.text
    for tab in tabs:
        expect(tab.get_by_test_id("therapy-table").locator("tr", has_text=patient)).to_be_visible(timeout=15_000)
    # and the stream of the API still has its slots for whoever wants one
    events = served.api("coordinator", "GET", "/events", stream=True)
    assert events.status_code == 200
    events.close()
