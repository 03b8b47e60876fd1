"""``tether demo``: a therapy network (two treatment centres, an apheresis centre, two manufacturing sites and
a courier), users of every role at its sites, tokens, and therapies spread over the journey's stages and the
network.

The demo users do the seeding through the same commands (``server.usecases``) a page or an integration sends:
the coordinator of the treatment centre starts each therapy and names its parties, each task is completed by
the user of its role at the site of its party (signing with the demo password where the diagram asks), the
integrator delivers messages and uploads logger readings, the courier and the manufacturing site record the
handoffs. Therapies are seeded as if started days ago (the engine runs on a clock set back for the seeding),
so that escalation timers which would have fired by now do fire when the seeding catches up with the present.

The planner of MFG-1 and the admin open weekday capacity from before the oldest therapy to a few weeks ahead
(``CAPACITY``); each autologous therapy's scheduling task books the first free apheresis slot at its collecting
site and the first manufacturing slot after it at its manufacturing site, so the recent therapies hold places
in the weeks to come.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from flask import current_app
from sqlalchemy import select

from engine.clock import FakeClock
from server import usecases
from server.access import accounts
from server.store.extensions import db
from server.store.models import Site, Slot, TaskRecord, Therapy, User, utcnow
from server.workflow import therapies

from .demo_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, form_data

DEMO_PASSWORD = "tether-demo-2026"  # noqa: S105  (printed for the demo on purpose)
SITES = [
    ("SITE-A", "St Elsewhere Treatment Centre", "treatment-centre"),
    ("SITE-B", "Riverside Cancer Centre", "treatment-centre"),
    ("APH-1", "Eastgate Apheresis Centre", "apheresis-centre"),
    ("MFG-1", "Northfield Cell Manufacturing", "manufacturing"),
    ("MFG-2", "Southbank Contract Manufacturing", "manufacturing"),
    ("COURIER-1", "ColdChain Couriers", "logistics"),
]
USERS = [  # username, printed name, roles, sites; a task is taken by the first of its role at its site
    ("admin", "Ada Admin", ["admin"], []),
    ("designer", "Dana Designer", ["designer"], []),
    ("coordinator", "Chris Coordinator", ["coordinator"], ["SITE-A"]),
    ("coordinator-b", "Casey Coordinator", ["coordinator"], ["SITE-B"]),
    ("apheresis", "Ari Apheresis", ["coordinator"], ["APH-1"]),
    ("manufacturing", "Morgan Maker", ["manufacturing"], ["MFG-1"]),
    ("manufacturing-2", "Mika Maker", ["manufacturing"], ["MFG-2"]),
    ("logistics", "Lee Logistics", ["logistics"], ["COURIER-1"]),
    ("planner", "Pat Planner", ["planner"], ["MFG-1"]),
    ("qa", "Quinn Quality", ["qa"], []),
    ("integrator", "Courier and MES gateway", ["integrator"], []),
    ("auditor", "Avery Auditor", ["auditor"], []),
]
# The parties of the demo's therapies beside their treatment centre: COURIER-1 ships every one, MFG-1 or MFG-2
# manufactures it, and some are collected at APH-1 (the others at their treatment centre).
AT_MFG_1 = {"manufacturing": "MFG-1", "logistics": "COURIER-1"}
AT_MFG_2 = {"manufacturing": "MFG-2", "logistics": "COURIER-1"}
AT_APH_1 = {"apheresis": "APH-1"}
# (process, site, patient reference, steps of the happy path to run, days ago it started, parties)
THERAPIES = [
    ("autologous_car_t", "SITE-A", "PT-A-0001", 0, 0, AT_MFG_1 | AT_APH_1),
    ("autologous_car_t", "SITE-A", "PT-A-0002", 2, 1, AT_MFG_1 | AT_APH_1),  # APH-1 collects the cells next
    ("autologous_car_t", "SITE-A", "PT-A-0003", 4, 3, AT_MFG_1),  # fresh material overdue: the 24 h escalation
    ("autologous_car_t", "SITE-B", "PT-B-0001", 6, 6, AT_MFG_2 | AT_APH_1),
    ("autologous_car_t", "SITE-B", "PT-B-0002", 9, 20, AT_MFG_1),  # awaiting QA release (signature)
    ("autologous_car_t", "SITE-A", "PT-A-0004", 12, 30, AT_MFG_2),
    ("autologous_car_t", "SITE-A", "PT-A-0005", 15, 34, AT_MFG_1 | AT_APH_1),
    ("autologous_car_t", "SITE-B", "PT-B-0003", 17, 36, AT_MFG_2),
    ("autologous_car_t", "SITE-A", "PT-A-0006", len(AUTOLOGOUS_HAPPY_PATH), 70, AT_MFG_1),  # completed
    ("allogeneic", "SITE-A", "PT-A-0101", 2, 1, AT_MFG_2),
    ("allogeneic", "SITE-B", "PT-B-0101", 4, 4, AT_MFG_1),  # the product delivered: the centre receives it
    ("allogeneic", "SITE-B", "PT-B-0102", len(ALLOGENEIC_HAPPY_PATH), 10, AT_MFG_2),
    ("autologous_car_t", "SITE-B", "PT-B-0004", 11, 25, AT_MFG_2 | AT_APH_1),  # return leg warms up: quarantine
]
# Weekday capacity (Monday to Friday) from before the oldest therapy to about four weeks ahead:
# (site, kind, start and end hour (UTC), places, who opens it).
CAPACITY = [
    ("APH-1", "apheresis", 8, 12, 2, "admin"),
    ("SITE-A", "apheresis", 8, 12, 1, "admin"),
    ("SITE-B", "apheresis", 8, 12, 1, "admin"),
    ("MFG-1", "manufacturing", 8, 18, 2, "planner"),
    ("MFG-2", "manufacturing", 8, 18, 1, "admin"),
    ("SITE-A", "infusion", 9, 17, 2, "admin"),
    ("SITE-B", "infusion", 9, 17, 2, "admin"),
]
CAPACITY_WEEKS_AHEAD = 4
# Therapies whose shipment the courier tracks: (tracking number, from party, to party, range °C, route as
# (latitude, longitude) positions an hour apart, hours to the expected arrival after the last position).
TRACKED = {
    "PT-A-0003": (
        "CC-A-0003",
        "apheresis",
        "manufacturing",
        (2.0, 8.0),
        [(48.137, 11.575), (48.366, 10.898), (48.401, 9.987), (48.560, 9.200)],
        30,
    ),
    "PT-B-0004": (
        "CC-B-0004-RET",
        "manufacturing",
        "treatment",
        (-196.0, -150.0),
        [(50.110, 8.682), (49.487, 8.466)],
        5,
    ),
}
# Therapies whose return shipment logs a temperature excursion once seeded.
EXCURSION_PATIENTS = {"PT-B-0004"}
# Handoffs recorded (with a scan of the bag label) right after a step of a journey:
# (process, step) -> (material, from, to, where, role, party): the user of ``role`` at the therapy's site for
# ``party`` records it. A giver or taker named by its party is recorded as that party's site; in the other
# texts "{treatment}", "{apheresis}", "{manufacturing}" and "{logistics}" stand for the parties' sites.
HANDOFFS = {
    ("autologous_car_t", "courier.picked_up"): (
        "LEUKOPAK-1",
        "apheresis",
        "logistics",
        "{apheresis} dock",
        "logistics",
        "logistics",
    ),
    ("autologous_car_t", "shipment.delivered"): (
        "LEUKOPAK-1",
        "logistics",
        "manufacturing",
        "{manufacturing} dock",
        "manufacturing",
        "manufacturing",
    ),
    ("autologous_car_t", "return.picked_up"): (
        "CAR-T-1",
        "manufacturing",
        "logistics",
        "{manufacturing} dock",
        "manufacturing",
        "manufacturing",
    ),
    ("autologous_car_t", "return.delivered"): (
        "CAR-T-1",
        "logistics",
        "treatment",
        "{treatment} cell therapy lab",
        "logistics",
        "logistics",
    ),
    ("autologous_car_t", "Task_StartLymphodepletion"): (
        "CAR-T-1",
        "{treatment} cell therapy lab",
        "{treatment} infusion ward",
        "{treatment} ward",
        "coordinator",
        "treatment",
    ),
    ("allogeneic", "shipment.picked_up"): (
        "LOT-1",
        "manufacturing",
        "logistics",
        "{manufacturing} cell bank depot",
        "logistics",
        "logistics",
    ),
    ("allogeneic", "shipment.delivered"): (
        "LOT-1",
        "logistics",
        "treatment",
        "{treatment} pharmacy",
        "logistics",
        "logistics",
    ),
}
# Temperatures a shipper's data logger reports after a pickup (one reading every 10 minutes for two hours).
LOGGED_LEGS = {"courier.picked_up": 5.0, "return.picked_up": -182.0, "shipment.picked_up": -180.0}


def seed(echo: Callable[[str], None], base_url: str = "http://127.0.0.1:5000") -> None:
    """Create what is missing and print how to log in."""
    if db.session.execute(select(Site).where(Site.code == "SITE-A")).scalar_one_or_none() is None:
        for code, name, kind in SITES:
            accounts.add_site(code, name, kind, actor="demo")
        for username, name, roles, sites in USERS:
            accounts.add_user(username, roles, sites, name, DEMO_PASSWORD, actor="demo")
        _seed_therapies(echo)
    else:
        echo("demo data already present; issuing fresh tokens")
    echo("")
    echo(f"Demo users (password for all: {DEMO_PASSWORD}):")
    for username, _name, roles, sites in USERS:
        token = accounts.issue_token(username, "demo", actor="demo")
        echo(f"  {username:<16} {', '.join(roles):<14} {', '.join(sites) or 'all sites':<10} {token}")
    echo("")
    echo(f"Open {base_url}/ in a browser, or try:")
    echo(f"  curl -H 'Authorization: Bearer <coordinator token>' {base_url}/api/v1/tasks")


def _open_capacity(app) -> None:
    """Open ``CAPACITY`` by weekly recurrences, from the first weekday after the oldest therapy's start (the
    clock set back to then) to ``CAPACITY_WEEKS_AHEAD`` weeks from now."""
    oldest = utcnow() - timedelta(days=max(days_ago for *_rest, days_ago, _parties in THERAPIES) + 1)
    first = oldest.date() + timedelta(days=1)
    weeks = (utcnow().date() - first).days // 7 + CAPACITY_WEEKS_AHEAD + 1
    app.config["CLOCK"] = FakeClock(oldest)
    for site, kind, start_hour, end_hour, places, planner in CAPACITY:
        start = datetime.combine(first, time(start_hour), oldest.tzinfo)
        usecases.open_capacity(
            usecases.OpenCapacity(
                site=site,
                kind=kind,
                start=start,
                end=start.replace(hour=end_hour),
                capacity=places,
                recurrence=f"FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT={5 * weeks}",
                by=_user(planner),
            )
        )


def _free_slot(site: str | None, kind: str, after: datetime) -> Slot:
    """The first open slot of ``kind`` at ``site`` starting after ``after`` with a place left."""
    return db.session.execute(
        select(Slot)
        .join(Site)
        .where(Site.code == site, Slot.kind == kind, Slot.status == "open", Slot.start_at > after)
        .where(Slot.booked < Slot.capacity)
        .order_by(Slot.start_at)
        .limit(1)
    ).scalar_one()


def _slots_to_book(therapy: Therapy, now: datetime) -> dict:
    """The scheduling form's slots: the first free apheresis slot at the collecting site from 12 h on, and the
    first free manufacturing slot at the manufacturing site from 12 h after the collection."""
    parties = therapy.parties
    apheresis = _free_slot(parties["apheresis"], "apheresis", now + timedelta(hours=12))
    manufacturing = _free_slot(parties["manufacturing"], "manufacturing", apheresis.end_at + timedelta(hours=12))
    return {"apheresis_slot_id": apheresis.id, "manufacturing_slot_id": manufacturing.id}


def _seed_therapies(echo: Callable[[str], None]) -> None:
    app = current_app
    original = app.config.get("CLOCK")
    try:
        _open_capacity(app)
        for process_key, site, patient, steps, days_ago, parties in THERAPIES:
            clock = FakeClock(utcnow() - timedelta(days=days_ago))
            app.config["CLOCK"] = clock
            therapy = usecases.start_therapy(
                usecases.StartTherapy(
                    process_key=process_key,
                    site=site,
                    patient_reference=patient,
                    by=_user(_acting("coordinator", site)),
                    parties=parties,
                )
            )
            journey = AUTOLOGOUS_HAPPY_PATH if process_key == "autologous_car_t" else ALLOGENEIC_HAPPY_PATH
            for step in journey[:steps]:
                clock.advance(hours=2)
                _run_step(therapy.id, step, clock)
                _record_cold_chain(therapy.id, process_key, step, clock)
            if patient in TRACKED:
                _track_shipment(therapy.id, clock, *TRACKED[patient])
            if patient in EXCURSION_PATIENTS:
                clock.advance(hours=1)
                _log_temperatures(therapy.id, clock, [-181.0, -176.5, -158.0, -139.5, -147.0, -171.0], "CC-RETURN")
            app.config["CLOCK"] = None
            therapies.fire_due_timers(therapy.id, actor="scheduler")
            therapy = db.session.get_one(Therapy, therapy.id)
            made_at = parties["manufacturing"]
            echo(f"therapy {therapy.coi} {process_key:<17} {site:<7} {made_at:<6} {therapy.status:<10} {therapy.stage}")
    finally:
        app.config["CLOCK"] = original


def _track_shipment(
    therapy_id: str, clock: FakeClock, tracking: str, from_party: str, to_party: str, limits, route, hours_left
) -> None:
    """The courier's shipment of a therapy in transit: created, then one position an hour, and the arrival it
    expects (for PT-A-0003, after the fresh material's 24 h window: the late-shipment alert shows)."""
    therapy = db.session.get_one(Therapy, therapy_id)
    courier = _user("integrator")
    shipment = usecases.create_shipment(
        usecases.CreateShipment(
            therapy_id=therapy_id,
            carrier="ColdChain",
            tracking_number=tracking,
            from_party=therapy.parties[from_party] or from_party,
            to_party=therapy.parties[to_party] or to_party,
            by=courier,
            temperature_min_c=limits[0],
            temperature_max_c=limits[1],
        )
    )
    for number, (latitude, longitude) in enumerate(route, start=1):
        clock.advance(hours=1)
        last = number == len(route)
        usecases.add_shipment_position(
            usecases.AddShipmentPosition(
                shipment_id=shipment.id,
                latitude=latitude,
                longitude=longitude,
                by=courier,
                recorded_at=clock(),
                expected_arrival=clock() + timedelta(hours=hours_left) if last else None,
            )
        )


def _record_cold_chain(therapy_id: str, process_key: str, step: tuple, clock: FakeClock) -> None:
    """After a step: the handoff it implies (scanned and recorded) and the logger readings of a new leg."""
    if step[0] not in ("task", "message"):
        return
    therapy = db.session.get_one(Therapy, therapy_id)
    handoff = HANDOFFS.get((process_key, step[1]))
    if handoff is not None:
        material, giver, taker, where, role, party = (part.format_map(therapy.parties) for part in handoff)
        clock.advance(minutes=5)
        usecases.record_custody(
            usecases.RecordCustody(
                therapy_id=therapy.id,
                material_id=material,
                from_party=giver,
                to_party=taker,
                scanned_coi="&/" + therapy.coi,
                by=_user(_acting(role, therapy.parties[party])),
                location=where,
            )
        )
    if step[0] == "message" and step[1] in LOGGED_LEGS:
        base = LOGGED_LEGS[step[1]]
        clock.advance(hours=2)
        _log_temperatures(therapy_id, clock, [base + (i % 4) * 0.5 for i in range(12)], f"CC-{step[1]}")


def _log_temperatures(therapy_id: str, clock: FakeClock, temperatures: list[float], shipment_id: str) -> None:
    """A data logger uploads readings taken every 10 minutes up to now."""
    first = clock() - timedelta(minutes=10 * len(temperatures))
    readings = [
        {
            "sensor_id": f"LOGGER-{shipment_id}",
            "shipment_id": shipment_id,
            "temperature_c": temperature,
            "recorded_at": first + timedelta(minutes=10 * (i + 1)),
            "location": None,
        }
        for i, temperature in enumerate(temperatures)
    ]
    usecases.record_readings(usecases.RecordReadings(therapy_id=therapy_id, readings=readings, by=_user("integrator")))


def _run_step(therapy_id: str, step: tuple, clock: FakeClock) -> None:
    therapy = db.session.get_one(Therapy, therapy_id)
    if step[0] == "task":
        task = db.session.execute(
            select(TaskRecord).where(
                TaskRecord.therapy_id == therapy_id, TaskRecord.status == "ready", TaskRecord.activity_id == step[1]
            )
        ).scalar_one()
        if task.form is None or task.site is None:  # every user task of the demo's journeys has both
            raise RuntimeError(f"demo task {task.activity_id} has no form to fill in or no site to act")
        signature = {"password": DEMO_PASSWORD, "meaning": task.signature} if task.signature else None
        booking = task.activity_id == "Task_Scheduling"
        usecases.complete_task(
            usecases.CompleteTask(
                task_id=task.id,
                by=_user(_acting(task.role, task.site.code)),
                data=_slots_to_book(therapy, clock()) if booking else dated(form_data(task.form, therapy.coi), clock()),
                signature=signature,
            )
        )
    elif step[0] == "message":
        usecases.deliver_message(
            usecases.DeliverMessage(name=step[1], by=_user("integrator"), therapy_id=therapy_id, payload=step[2])
        )
    elif step[0] == "advance":
        clock.advance(**step[1])
        therapies.fire_due_timers(therapy_id, actor="scheduler")


def dated(data: dict, moment: datetime) -> dict:
    """A form's example ``data`` with its dates and times moved so that the latest of them is ``moment`` (their
    spacing kept): a collection recorded by the demo ends when the demo collected, not on the example's day."""
    times, days = {}, {}
    for key, value in data.items():
        if not isinstance(value, str) or len(value) < 10 or value[4:5] != "-":
            continue
        try:
            if len(value) == 10:
                days[key] = date.fromisoformat(value)
            else:
                times[key] = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
    if not times and not days:
        return data
    shift = moment - max(times.values()) if times else timedelta(days=(moment.date() - max(days.values())).days)
    out = dict(data)
    for key, value in times.items():
        out[key] = (value + shift).isoformat().replace("+00:00", "Z")
    for key, day in days.items():
        out[key] = (day + timedelta(days=shift.days)).isoformat()
    return out


def _user(username: str) -> User:
    """The demo user ``username``."""
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


def _acting(role: str, site: str | None) -> str:
    """The demo user who acts in ``role`` at ``site``: the first of ``USERS`` with that role and site, or with
    that role and no sites (qa and the integrator act for every site)."""
    return next(name for name, _name, roles, sites in USERS if role in roles and (site in sites or not sites))
