"""Accessibility: axe-core (from npm, node_modules/axe-core) checks every page as a suitable demo user and finds
no serious or critical violation; a task form is completed with the keyboard alone."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from ..conftest import ROOT
from .conftest import open_context
from .people import log_in

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def _first(served, user: str, path: str) -> dict:
    answer = served.api(user, "GET", path)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"][0]


def _draft(served) -> str:
    """A new studio draft of the bundled autologous process."""
    answer = served.api("designer", "POST", "/process-drafts", json={"key": "autologous_car_t"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


# page name: (demo user, path, or a function of the served demo giving the path)
PAGES = {
    "login": (None, "/login"),
    "control tower": ("coordinator", "/dashboard"),
    "tasks": ("coordinator", "/tasks"),
    "task form": ("coordinator", lambda served: f"/tasks/{_first(served, 'coordinator', '/tasks')['id']}"),
    "signed task form": ("qa", lambda served: f"/tasks/{_first(served, 'qa', '/tasks')['id']}"),
    "therapy": ("coordinator", lambda served: f"/therapies/{_first(served, 'coordinator', '/therapies')['id']}"),
    "alerts": ("coordinator", "/alerts?scope=all"),
    "alerts for me": ("logistics", "/alerts"),
    "processes": ("designer", "/definitions"),
    "process": ("designer", "/definitions/autologous_car_t"),
    "process version": ("designer", "/definitions/autologous_car_t/versions/1"),
    "migration": ("admin", "/definitions/autologous_car_t/migrate"),
    "studio": ("designer", "/studio"),
    "studio draft": ("designer", lambda served: f"/studio/{_draft(served)}"),
    "studio form preview": (
        "designer",
        lambda served: f"/studio/{_draft(served)}/form-preview?form=enrolment.schema.json&ui=enrolment.uischema.json",
    ),
    "audit": ("auditor", "/audit"),
    "capacity": ("planner", "/capacity"),
    "metrics": ("coordinator", "/reports"),
}


def serious_violations(page: Page) -> list[dict]:
    """Run axe-core on the page as it stands; its violations of impact serious or critical."""
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed at {AXE}; `make install` runs npm")
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in results["violations"] if v.get("impact") in SERIOUS]


def describe(violations: list[dict]) -> str:
    """Each violation's rule, impact and help, and the elements it found (their CSS targets)."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        lines.extend(f"    {' '.join(map(str, node['target']))}" for node in v["nodes"][:10])
    return "\n".join(lines)


@pytest.fixture(scope="module")
def signed_in(browser, served):
    """A page per demo user, logged in once for all the pages checked as that user (a check only reads a page)."""
    contexts, pages = [], {}

    def page_of(user: str) -> Page:
        if user not in pages:
            contexts.append(open_context(browser, served))
            pages[user] = contexts[-1].new_page()
            log_in(pages[user], user, served.password)
        return pages[user]

    yield page_of
    for context in contexts:
        context.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_has_no_serious_or_critical_accessibility_violation(request, signed_in, served, name):
    user, path = PAGES[name]
    page = signed_in(user) if user is not None else request.getfixturevalue("page")
    page.goto(path if isinstance(path, str) else path(served))
    page.wait_for_load_state("load")
    expect(page.locator("main#main")).to_be_visible()
    if page.locator("[data-diagram]").count():
        expect(page.locator("[data-diagram]").first).to_have_attribute("data-rendered", "true")
    if page.locator("[data-studio]").count():
        expect(page.locator("[data-studio]")).to_have_attribute("data-rendered", "true")
        expect(page.get_by_test_id("studio-status")).to_have_attribute("data-state", "ok")
    violations = serious_violations(page)
    assert not violations, f"{name} ({page.url}):\n{describe(violations)}"


def _focused_name(page: Page) -> str:
    return page.evaluate("() => document.activeElement && (document.activeElement.name || '')")


def _tab_to(page: Page, name: str, most: int = 80) -> None:
    """Press Tab until the field ``name`` has the focus."""
    for _ in range(most):
        if _focused_name(page) == name:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {name}")


def test_a_task_form_is_completed_with_the_keyboard_alone(page, served):
    patient = f"PT-KB-{uuid.uuid4().hex[:6]}"
    therapy = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={"process_key": "autologous_car_t", "site": "SITE-A", "patient": {"reference": patient}},
    ).json()
    [task] = served.api("coordinator", "GET", f"/tasks?therapy_id={therapy['id']}").json()["items"]
    assert task["form"]["name"].startswith("enrolment"), task["form"]
    log_in(page, "coordinator", served.password)
    page.goto(f"/tasks/{task['id']}")
    keys = page.keyboard

    _tab_to(page, "data.consent_obtained")
    keys.press("Space")
    _tab_to(page, "data.consent_date")
    keys.type("11022026")  # month, day, year: the browser's en-US date field, segment by segment
    _tab_to(page, "data.eligibility_confirmed")
    keys.press("Space")
    _tab_to(page, "data.indication")
    keys.type("Relapsed/refractory DLBCL")
    _tab_to(page, "data.treating_physician")
    keys.type("Dr K. Board")
    _tab_to(page, "data.payer_authorisation_status")
    if page.evaluate("() => document.activeElement.type") == "radio":
        keys.press("Space")  # the first choice: approved
    else:
        keys.type("Approved")
    _tab_to(page, "data.payer_authorisation_reference")
    keys.type("PA-KB-1")
    for _ in range(40):  # on to the submit button, then Enter
        keys.press("Tab")
        if page.evaluate("() => document.activeElement.type === 'submit'"):
            break
    expect(page.locator(":focus")).to_have_text(re.compile(r"Complete|Submit|Save", re.I))
    keys.press("Enter")
    expect(page.get_by_role("status")).to_contain_text(f"Completed: {task['name']} ({patient})")
    assert served.api("coordinator", "GET", f"/tasks/{task['id']}").json()["status"] == "completed"
