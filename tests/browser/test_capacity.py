"""Capacity in the browser: MFG-1's planner opens a weekly recurrence of manufacturing slots in the calendar, the
treatment centre's coordinator books a place from the therapy page, and the planner's calendar then names the
therapy by its COI (never the patient) with one place left."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta

from playwright.sync_api import expect

from .people import log_in

WEEKS_AHEAD = 26  # far beyond the demo's capacity, so the week is this test's own


def test_a_planner_opens_a_recurrence_and_a_coordinator_books_a_place(page, new_page, served):
    today = date.today()
    monday = today + timedelta(days=7 * WEEKS_AHEAD - today.weekday())
    log_in(page, "planner", served.password)
    page.get_by_role("link", name="Capacity").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Capacity of MFG-1")
    page.get_by_label("Kind").select_option("manufacturing")
    page.get_by_label("Start (UTC)").fill(f"{monday.isoformat()}T08:00")
    page.get_by_label("End (UTC)").fill(f"{monday.isoformat()}T16:00")
    page.get_by_label("Places", exact=True).fill("2")
    page.get_by_label("Mon", exact=True).check()
    page.get_by_label("Thu", exact=True).check()
    page.get_by_label("Number of slots (with repeat)").fill("4")
    page.get_by_role("button", name="Open capacity").click()
    expect(page.get_by_role("status")).to_contain_text("Opened 4 manufacturing slots at MFG-1")
    expect(page.get_by_test_id("week")).to_have_text(f"Week of {monday.strftime('%a %d %b %Y')}")
    calendar = page.get_by_test_id("calendar")
    expect(calendar.locator("[data-slot-id]")).to_have_count(2)
    expect(calendar.locator(f"[data-day='{monday.isoformat()}'] [data-testid='places']")).to_have_text("2 left of 2")

    patient = f"PT-CAP-{uuid.uuid4().hex[:6]}"
    started = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={
            "process_key": "autologous_car_t",
            "site": "SITE-A",
            "patient": {"reference": patient},
            "parties": {"manufacturing": "MFG-1", "logistics": "COURIER-1"},
        },
    )
    assert started.status_code == 201, started.text
    therapy = started.json()
    coordinator = new_page()
    log_in(coordinator, "coordinator", served.password)
    coordinator.goto(f"/therapies/{therapy['id']}")
    picker = coordinator.get_by_label(re.compile("^Manufacturing at MFG-1"))
    wanted = f"{monday.strftime('%a %d %b')} 08:00-16:00, MFG-1, 2 places left"
    picker.select_option(label=wanted)
    coordinator.get_by_role("button", name="Book manufacturing").click()
    expect(coordinator.get_by_role("status")).to_have_text(f"Booked: {monday.strftime('%a %d %b')} 08:00-16:00, MFG-1.")
    booked = coordinator.get_by_test_id("bookings").locator("[data-status='booked']")
    expect(booked).to_contain_text("manufacturing")
    expect(booked).to_contain_text("MFG-1")

    page.reload()
    day = calendar.locator(f"[data-day='{monday.isoformat()}']")
    expect(day.get_by_test_id("places")).to_have_text("1 left of 2")
    coi = therapy["coi"]
    expect(day.get_by_role("link", name=re.compile("^" + coi))).to_be_visible()
    expect(page.locator("main")).not_to_contain_text(patient)
