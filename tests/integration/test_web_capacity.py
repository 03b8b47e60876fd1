"""Capacity and bookings on the web pages: the planner's week calendar (slots, places left, the COIs booked and
never a patient) and its forms, a therapy's bookings and its "Book a place" form, the slot picker of a task's form,
and the utilisation on the control tower; refusals show the command's message."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

from ..conftest import FIXTURES
from ..support.pages import signed_in
from .test_capacity import _book, _slot
from .test_therapy_network import _enrolled, _start
from .test_web_network import PATIENT, _post, _section, _text


def _monday(clock) -> str:
    day = clock.now.date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _calendar(client, site: str, week: str) -> str:
    return _text(client, f"/capacity?site={site}&week={week}")


def _slots_shown(page: str) -> list[str]:
    return re.findall(r'data-slot-id="([^"]+)"', page)


def _places(page: str, slot_id: str) -> str:
    article = re.search(rf'data-slot-id="{slot_id}".*?</article>', page, re.S).group(0)
    return re.search(r'data-testid="places">([^<]*)<', article).group(1)


def _flash(page: str) -> str:
    return re.search(r'class="flash flash-\w+"[^>]*>([^<]*)<', page).group(1)


def test_a_planner_opens_a_weekly_recurrence_in_the_calendar_of_its_site(app, api, network, clock):
    planner = signed_in(app, "planner1")
    dashboard = _text(planner, "/dashboard")
    assert 'href="/capacity">Capacity</a>' in dashboard
    assert 'href="/capacity"' not in _text(signed_in(app, "coord"), "/dashboard")
    assert signed_in(app, "coord").get("/capacity").status_code == 403
    page = _text(planner, "/capacity")
    sites = re.search(r'id="capacity-site".*?</select>', page, re.S).group(0)
    assert re.findall(r'<option value="([^"]+)"', sites) == ["MFG-1"]  # its own sites only
    next_week = clock.now.date() + timedelta(days=7 - clock.now.weekday())  # the coming Monday
    opened = _post(
        planner,
        "/capacity",
        "/capacity",
        site="MFG-1",
        kind="manufacturing",
        start=f"{next_week.isoformat()}T08:00",
        end=f"{next_week.isoformat()}T16:00",
        capacity="2",
        repeat_days=["MO", "TH"],
        repeat_count="4",
    )
    assert f"Opened 4 manufacturing slots at MFG-1, the first {next_week.strftime('%a %d %b')} 08:00-16:00" in opened
    assert "Week of " + next_week.strftime("%a %d %b %Y") in opened
    assert len(_slots_shown(opened)) == 2  # Monday and Thursday of that week
    day_sections = dict(re.findall(r'data-day="([^"]+)">(.*?)</section>', opened, re.S))
    assert "08:00–16:00" in day_sections[next_week.isoformat()]
    assert "2 left of 2" in day_sections[(next_week + timedelta(days=3)).isoformat()]
    following = _calendar(planner, "MFG-1", (next_week + timedelta(days=7)).isoformat())
    assert len(_slots_shown(following)) == 2
    listed = api.as_(network["admin"]).get("/api/v1/slots?site=MFG-1").get_json()["items"]
    assert len(listed) == 4 and {s["capacity"] for s in listed} == {2}


def test_a_planner_of_mfg_1_cannot_open_capacity_at_mfg_2(app, api, network, clock):
    start = clock.now + timedelta(days=2)
    page = _post(
        signed_in(app, "planner1"),
        "/capacity",
        "/capacity",
        site="MFG-2",
        kind="manufacturing",
        start=start.strftime("%Y-%m-%dT08:00"),
        end=start.strftime("%Y-%m-%dT16:00"),
        capacity="1",
    )
    assert "Not opened: You plan the capacity of your own sites, not MFG-2." in page
    assert api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"] == []
    # Bad input is refused with the command's message, and opens nothing.
    bad = _post(
        signed_in(app, "planner1"),
        "/capacity",
        "/capacity",
        site="MFG-1",
        kind="manufacturing",
        start=start.strftime("%Y-%m-%dT16:00"),
        end=start.strftime("%Y-%m-%dT08:00"),
    )
    assert "Not opened: end must be after start." in bad
    unended = _post(
        signed_in(app, "planner1"),
        "/capacity",
        "/capacity",
        site="MFG-1",
        kind="manufacturing",
        start=start.strftime("%Y-%m-%dT08:00"),
        end=start.strftime("%Y-%m-%dT16:00"),
        repeat_days=["MO"],
    )
    assert "Not opened: say how many slots the weekly repeat opens." in unended
    assert api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"] == []


def test_the_calendar_changes_and_closes_slots_and_blacks_out_days_with_refusals_shown(app, api, network, clock):
    therapy = _start(api, network["coord"]).get_json()
    booked = _slot(api, network["planner1"], clock, days=2)
    free = _slot(api, network["planner1"], clock, days=3)
    assert _book(api, network["coord"], therapy["id"], booked["id"]).status_code == 201
    planner = signed_in(app, "planner1")
    week = booked["start"][:10]
    calendar = f"/capacity?site=MFG-1&week={week}"

    changed = _post(planner, f"/capacity/slots/{free['id']}/capacity", calendar, capacity="3")
    assert "Changed: " in changed and _places(changed, free["id"]) == "3 left of 3"
    below = _post(planner, f"/capacity/slots/{booked['id']}/capacity", calendar, capacity="0")
    assert "The capacity was not changed: capacity must be a whole number of places from 1 to 1000." in below
    still_booked = _post(planner, f"/capacity/slots/{booked['id']}/close", calendar)
    assert "The slot was not closed: 1 places of the slot are booked; move or cancel those bookings first." in (
        still_booked
    )
    dark_booked = _post(planner, "/capacity/blackouts", calendar, site="MFG-1", day=week, reason="Shutdown")
    assert "Not blacked out: 1 slot(s) of MFG-1 on" in dark_booked
    closed = _post(planner, f"/capacity/slots/{free['id']}/close", calendar)
    assert "Closed: the manufacturing slot" in closed and free["id"] not in _slots_shown(closed)
    day = free["start"][:10]
    dark = _post(planner, "/capacity/blackouts", calendar, site="MFG-1", day=day, reason="Maintenance")
    assert f"MFG-1 is blacked out on {day}; 0 free slot(s) closed." in dark
    assert "Blacked out: Maintenance" in dict(re.findall(r'data-day="([^"]+)">(.*?)</section>', dark, re.S))[day]
    elsewhere = _post(planner, "/capacity/blackouts", calendar, site="MFG-2", day=day, reason="Not mine")
    assert "Not blacked out: You plan the capacity of your own sites, not MFG-2." in elsewhere


def test_the_calendar_names_the_booked_therapies_by_coi_and_never_the_patient(app, api, network, clock):
    therapy = _enrolled(api, network)
    slot = _slot(api, network["planner1"], clock, capacity=2)
    assert _book(api, network["coord"], therapy["id"], slot["id"]).status_code == 201
    for reader in ("planner1", "admin"):
        page = _calendar(signed_in(app, reader), "MFG-1", slot["start"][:10])
        assert _places(page, slot["id"]) == "1 left of 2"
        link = re.search(rf'href="/therapies/{therapy["id"]}">([^<]*)<', page)
        assert link is not None and link.group(1).replace(" ", "").startswith(therapy["coi"]), reader
        assert PATIENT not in page, reader


def test_a_coordinator_books_moves_and_cancels_places_from_the_therapy_page(app, api, network, clock):
    therapy = _enrolled(api, network)
    first = _slot(api, network["planner1"], clock, days=2)
    later = _slot(api, network["planner1"], clock, days=4, capacity=2)
    _slot(api, network["admin"], clock, days=2, site="MFG-2")  # not this therapy's manufacturing site
    coordinator = signed_in(app, "coord")
    path = f"/therapies/{therapy['id']}"
    page = _text(coordinator, path)
    assert "No places booked." in page
    picker = re.search(r'id="book-manufacturing".*?</select>', page, re.S).group(0)
    labels = re.findall(r'<option value="[^"]+">([^<]*)<', picker)
    day = clock.now + timedelta(days=2)
    assert labels == [
        f"{day.strftime('%a %d %b')} 08:00-16:00, MFG-1, 1 place left",
        f"{(day + timedelta(days=2)).strftime('%a %d %b')} 08:00-16:00, MFG-1, 2 places left",
    ]
    assert 'id="book-apheresis"' in page and 'id="book-infusion"' in page  # at the treatment centre

    booked = _post(coordinator, f"{path}/bookings", path, slot_id=first["id"])
    assert f"Booked: {day.strftime('%a %d %b')} 08:00-16:00, MFG-1." in booked
    rows = _section(booked, "bookings-title")
    assert re.findall(r'data-status="(\w+)"><td>(\w+)</td><td>([\w-]+)</td>', rows) == [
        ("booked", "manufacturing", "MFG-1")
    ]
    unexplained = _post(coordinator, f"{path}/bookings", path, slot_id=later["id"])
    assert "Not booked: The therapy holds a manufacturing booking; moving it needs a reason code" in unexplained
    moved = _post(coordinator, f"{path}/bookings", path, slot_id=later["id"], reason_code="SITE_CAPACITY")
    assert "Booked: " in moved
    rows = _section(moved, "bookings-title")
    assert re.findall(r'data-status="(\w+)"', rows) == ["moved", "booked"]
    booking = re.search(r'data-booking-id="([^"]+)" data-status="booked"', rows).group(1)
    cancelled = _post(coordinator, f"{path}/bookings/{booking}/cancel", path, reason_code="PATIENT_WITHDREW")
    assert "The manufacturing booking was cancelled; its place is free again." in cancelled, _flash(cancelled)
    slots = {s["id"]: s["booked"] for s in api.as_(network["admin"]).get("/api/v1/slots").get_json()["items"]}
    assert slots[first["id"]] == 0 and slots[later["id"]] == 0
    # MFG-1's planner books at MFG-1 only; the maker sees the bookings but books nothing.
    planner = _text(signed_in(app, "planner1"), path)
    assert 'id="book-manufacturing"' in planner and 'id="book-infusion"' not in planner
    maker = _text(signed_in(app, "mfg1"), path)
    assert 'data-booking-id="' in maker and 'id="book-manufacturing"' not in maker


def test_a_full_slot_is_refused_with_its_message(app, api, network, clock):
    therapy = _enrolled(api, network)
    other = _enrolled(api, network)
    slot = _slot(api, network["planner1"], clock)
    coordinator = signed_in(app, "coord")
    path = f"/therapies/{therapy['id']}"
    page = _text(coordinator, path)  # the picker offered the slot while it was free
    assert slot["id"] in _section(page, "bookings-title")
    assert _book(api, network["coord"], other["id"], slot["id"]).status_code == 201
    refused = _post(coordinator, f"{path}/bookings", path, slot_id=slot["id"])
    assert "Not booked: The slot has no place left; choose another." in refused
    assert "No places booked." in refused
    assert slot["id"] not in re.search(r'id="book-manufacturing".*?</select>', refused, re.S).group(0)


def test_the_control_tower_shows_the_capacity_booked_in_the_coming_two_weeks(app, api, network, clock):
    therapy = _enrolled(api, network)
    slot = _slot(api, network["planner1"], clock, capacity=4)
    _slot(api, network["planner1"], clock, days=5, capacity=4)
    _slot(api, network["planner1"], clock, days=20, capacity=50)  # beyond the two weeks
    _slot(api, network["admin"], clock, site="MFG-2", capacity=3)
    assert _book(api, network["coord"], therapy["id"], slot["id"]).status_code == 201

    def shown(reader: str) -> dict:
        table = _section(_text(signed_in(app, reader), "/dashboard"), "utilisation-title")
        return dict(
            re.findall(r'data-site="([^"]+)" data-kind="manufacturing">.*?data-col="booked">([^<]*)<', table, re.S)
        )

    assert shown("admin") == {"MFG-1": "1 / 8 places", "MFG-2": "0 / 3 places"}
    assert shown("planner1") == {"MFG-1": "1 / 8 places"}  # its own sites


PICKER_FORM = {
    "type": "object",
    "properties": {
        "manufacturing_slot_id": {"type": "string", "title": "Manufacturing slot"},
        "collection": {"type": "string", "title": "Collection slot"},
        "note": {"type": "string"},
    },
    "required": ["manufacturing_slot_id"],
}
PICKER_UI = {"collection": {"ui:widget": "slot", "ui:options": {"kind": "apheresis"}}}


def _picker_process(app) -> str:
    """The network diagram with a scheduling form on its enrolment task; its process key."""
    from server.workflow.definitions import deploy

    bpmn = (FIXTURES / "network.bpmn").read_text()
    bpmn = bpmn.replace('id="network_therapy" name="Network therapy"', 'id="network_picker" name="Network picker"')
    bpmn = bpmn.replace(
        '<bpmn:userTask id="Task_Enrol" name="Enrol patient">',
        '<bpmn:userTask id="Task_Enrol" name="Enrol patient"><bpmn:extensionElements><spiffworkflow:properties>'
        '<spiffworkflow:property name="formJsonSchemaFilename" value="picker.schema.json"/>'
        '<spiffworkflow:property name="formUiSchemaFilename" value="picker.uischema.json"/>'
        "</spiffworkflow:properties></bpmn:extensionElements>",
    )
    forms = {
        "picker.schema.json": json.dumps(PICKER_FORM).encode(),
        "picker.uischema.json": json.dumps(PICKER_UI).encode(),
    }
    with app.app_context():
        deploy(bpmn.encode(), forms, "test")
    return "network_picker"


def test_a_task_form_draws_slot_ids_as_pickers_of_the_free_slots_soonest_first(app, api, network, clock):
    process = _picker_process(app)
    started = _start(api, network["coord"], process_key=process)
    assert started.status_code == 201, started.get_json()
    therapy = started.get_json()
    later = _slot(api, network["planner1"], clock, days=6)
    sooner = _slot(api, network["planner1"], clock, days=3)
    full = _slot(api, network["planner1"], clock, days=1)
    _slot(api, network["admin"], clock, days=2, site="MFG-2")
    collection = _slot(api, network["admin"], clock, days=1, kind="apheresis", site="SITE-A")
    other = _start(api, network["coord"]).get_json()
    assert _book(api, network["coord"], other["id"], full["id"]).status_code == 201
    (task,) = api.as_(network["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["open_tasks"]
    coordinator = signed_in(app, "coord")
    page = _text(coordinator, f"/tasks/{task['id']}")
    picker = re.search(r'<select id="f-data-manufacturing_slot_id".*?</select>', page, re.S).group(0)
    assert 'data-slot-kind="manufacturing"' in picker
    assert re.findall(r'<option value="([^"]*)"', picker) == ["", sooner["id"], later["id"]]
    day = (clock.now + timedelta(days=3)).strftime("%a %d %b")
    assert f">{day} 08:00-16:00, MFG-1, 1 place left<" in picker
    by_widget = re.search(r'<select id="f-data-collection".*?</select>', page, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', by_widget) == ["", collection["id"]]
    assert '<input type="text" id="f-data-note"' in page
    done = _post(
        coordinator, f"/tasks/{task['id']}", f"/tasks/{task['id']}", **{"data.manufacturing_slot_id": sooner["id"]}
    )
    assert "Completed: Enrol patient" in done
    recorded = api.as_(network["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()
    assert recorded["data"] == {"manufacturing_slot_id": sooner["id"]}


def test_the_week_moves_back_and_forth(app, network, clock):
    monday = _monday(clock)
    page = _calendar(signed_in(app, "admin"), "MFG-1", monday)
    previous = re.search(r'href="([^"]+)" rel="prev"', page).group(1)
    following = re.search(r'href="([^"]+)" rel="next"', page).group(1)
    assert previous.endswith(f"week={_iso_day(monday, -7)}") and following.endswith(f"week={_iso_day(monday, 7)}")
    assert 'data-day="' + monday + '"' in page and len(re.findall(r'data-day="', page)) == 7


def _iso_day(day: str, shift: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=shift)).isoformat()
