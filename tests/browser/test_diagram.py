"""A wide process on the therapy page: drawn readable at the current step, with buttons for the whole process
and back to the current step."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from .people import log_in


def test_a_wide_process_opens_at_the_current_step_and_shows_the_whole_on_demand(page, served):
    started = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={
            "process_key": "autologous_car_t",
            "site": "SITE-A",
            "patient": {"reference": f"PT-D-{uuid.uuid4().hex[:6]}"},
        },
    )
    assert started.status_code == 201, started.text
    log_in(page, "coordinator", served.password)
    page.goto(f"/therapies/{started.json()['id']}")
    diagram = page.locator("[data-diagram]")
    expect(diagram).to_have_attribute("data-rendered", "true")
    zoom = (
        "() => document.querySelector('[data-diagram] .djs-container') && "
        "document.querySelector('[data-diagram] svg .viewport').transform.baseVal.consolidate().matrix.a"
    )
    assert abs(page.evaluate(zoom) - 0.85) < 0.01, "opened readable, at the current step"
    assert diagram.locator(".tether-current").count() >= 1
    page.get_by_role("button", name="Whole process").click()
    assert page.evaluate(zoom) < 0.75, "the whole process fits the box"
    page.get_by_role("button", name="Current step").click()
    assert abs(page.evaluate(zoom) - 0.85) < 0.01
