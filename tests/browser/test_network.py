"""The therapy network in the browser, with people of three sites: the treatment centre's coordinator starts a
therapy naming its manufacturing site and courier, MFG-1's maker completes the manufacturing without learning the
patient, the courier ships, and MFG-2's maker sees nothing of it.

The sites, people and diagram the journey needs are added to the served demo through the command line (a site
the demo already holds is kept): the network diagram (tests/fixtures/network.bpmn) puts manufacturing in a lane
of the manufacturing party and shipping with the logistics party.
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

SITES = {"MFG-2": "manufacturing", "COURIER-1": "logistics"}  # MFG-1 and SITE-A are the demo's
PEOPLE = {"maker-mfg-1": ("manufacturing", "MFG-1"), "maker-mfg-2": ("manufacturing", "MFG-2")}
PEOPLE["courier-1"] = ("logistics", "COURIER-1")


@pytest.fixture(scope="module")
def network(served) -> dict[str, str]:
    """The served demo with MFG-2, COURIER-1, a person of one site each, and the network diagram deployed;
    the people's user names by their part."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TETHER_DATABASE_URL": f"sqlite:///{served.database}"}
    cwd = served.database.parent
    for code, kind in SITES.items():
        added = tether_cli("site", "add", code, "--kind", kind, env=env, cwd=cwd)
        assert added.returncode == 0 or "already exists" in added.stderr, added.stderr
    suffix = uuid.uuid4().hex[:4]
    names = {}
    for part, (role, site) in PEOPLE.items():
        names[part] = f"{part}-{suffix}"
        tether_cli(
            "user",
            "add",
            names[part],
            "--role",
            role,
            "--site",
            site,
            "--password-stdin",
            env=env,
            cwd=cwd,
            stdin=served.password + "\n",
            check=True,
        )
    tether_cli("deploy", str(FIXTURES / "network.bpmn"), env=env, cwd=cwd, check=True)
    return names


def _complete(page: Page, name: str, patient: str) -> None:
    """On a task page without a form: complete it, and read the flash."""
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    page.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text(f"Completed: {name} ({patient}).")


def test_three_sites_work_one_therapy_and_a_fourth_sees_nothing_of_it(page, new_page, served, network):
    patient = f"PT-NET-{uuid.uuid4().hex[:6]}"
    log_in(page, "coordinator", served.password)
    page.goto("/dashboard")
    page.locator("#start-process").select_option("network_therapy")
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
    log_in(maker, network["maker-mfg-1"], served.password)
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
    log_in(courier, network["courier-1"], served.password)
    courier.goto(f"/tasks?therapy={coi}")
    courier.get_by_role("link", name="Ship the product").click()
    _complete(courier, "Ship the product", "withheld")

    page.goto(f"/therapies/{therapy_id}")
    expect(page.get_by_test_id("therapy-status")).to_have_text("completed")
    expect(page.get_by_test_id("patient")).to_have_text(patient)

    other = new_page()
    log_in(other, network["maker-mfg-2"], served.password)
    other.goto("/dashboard?status=all")
    expect(other.locator(f"[data-therapy-id='{therapy_id}']")).to_have_count(0)
    other.goto(f"/tasks?therapy={coi}")
    expect(other.get_by_text("Nothing to do right now for this filter.")).to_be_visible()
    assert other.goto(f"/therapies/{therapy_id}").status == 404
