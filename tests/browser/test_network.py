"""The therapy network in the browser, with people of three sites: the treatment centre's coordinator starts a
therapy naming its manufacturing site and courier, MFG-1's maker completes the manufacturing without learning the
patient, the courier ships, and MFG-2's maker sees nothing of it.

The demo's people do it (``coordinator`` at SITE-A, ``manufacturing`` at MFG-1, ``logistics`` at COURIER-1,
``manufacturing-2`` at MFG-2) on the network diagram of the tests (tests/fixtures/network.bpmn: manufacturing in
a lane of the manufacturing party, shipping with the logistics party), deployed through the command line.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from ..conftest import FIXTURES, ROOT
from ..support.served import tether_cli
from .people import log_in


@pytest.fixture(scope="module")
def network_diagram(served) -> str:
    """The network diagram deployed to the served demo; its process key."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TETHER_DATABASE_URL": f"sqlite:///{served.database}"}
    tether_cli("deploy", str(FIXTURES / "network.bpmn"), env=env, cwd=served.database.parent, check=True)
    return "network_therapy"


def _complete(page: Page, name: str, patient: str) -> None:
    """On a task page without a form: complete it, and read the flash."""
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    page.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text(f"Completed: {name} ({patient}).")


def test_three_sites_work_one_therapy_and_a_fourth_sees_nothing_of_it(page, new_page, served, network_diagram):
    patient = f"PT-NET-{uuid.uuid4().hex[:6]}"
    log_in(page, "coordinator", served.password)
    page.goto("/dashboard")
    page.locator("#start-process").select_option(network_diagram)
    page.locator("#start-site").select_option("SITE-A")
    page.locator("#start-manufacturing").select_option("MFG-1")
    page.locator("#start-logistics").select_option("COURIER-1")
    page.get_by_label(re.compile("Patient reference")).fill(patient)
    page.get_by_role("button", name="Start therapy").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Therapy {patient}")
    parties = page.get_by_test_id("parties")
    expect(parties.locator("[data-party='manufacturing']")).to_have_text("MFG-1")
    expect(parties.locator("[data-party='logistics']")).to_have_text("COURIER-1")
    coi = page.get_by_test_id("coi").inner_text().split()[0]
    therapy_id = page.url.rsplit("/", 1)[-1]
    page.get_by_role("link", name="Enrol patient").click()
    _complete(page, "Enrol patient", patient)

    maker = new_page()
    log_in(maker, "manufacturing", served.password)
    maker.goto("/tasks")
    row = maker.get_by_test_id("inbox").locator("tr", has_text=coi)
    expect(row).to_contain_text("withheld")
    expect(row).to_contain_text("manufacturing · MFG-1")
    row.get_by_role("link", name="Manufacture the batch").click()
    expect(maker.get_by_test_id("task-patient")).to_have_text("withheld")
    expect(maker.get_by_test_id("task-party")).to_have_text("manufacturing · MFG-1")
    _complete(maker, "Manufacture the batch", "withheld")
    maker.goto(f"/therapies/{therapy_id}")
    expect(maker.get_by_test_id("patient")).to_have_text("withheld")
    expect(maker.get_by_role("heading", level=1)).not_to_contain_text(patient)

    courier = new_page()
    log_in(courier, "logistics", served.password)
    courier.goto(f"/tasks?therapy={coi}")
    courier.get_by_role("link", name="Ship the product").click()
    _complete(courier, "Ship the product", "withheld")

    page.goto(f"/therapies/{therapy_id}")
    expect(page.get_by_test_id("therapy-status")).to_have_text("completed")
    expect(page.get_by_test_id("patient")).to_have_text(patient)

    other = new_page()
    log_in(other, "manufacturing-2", served.password)
    other.goto("/dashboard?status=all")
    expect(other.locator(f"[data-therapy-id='{therapy_id}']")).to_have_count(0)
    other.goto(f"/tasks?therapy={coi}")
    expect(other.get_by_text("Nothing to do right now for this filter.")).to_be_visible()
    assert other.goto(f"/therapies/{therapy_id}").status == 404
