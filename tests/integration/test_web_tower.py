"""The control tower at scale: phases from the diagram, chips to filter by, search, the late and at-risk first,
cursor paging, the vein-to-vein column, and the cheap refresh its live updates poll."""

from __future__ import annotations

import re

from server.store.extensions import db
from server.store.models import Therapy

from ..e2e.test_bundled_journeys import run_journey, take_steps
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from .conftest import PASSWORD
from .test_compliance import bundled as bundled  # noqa: F401  (the fixture)


def _client(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302
    return client


def _text(client, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, path
    return answer.get_data(as_text=True)


# The phase a therapy of the bundled autologous diagram is in after each step of its happy path.
PHASES_AFTER = [
    "referral",  # Task_Enrolment -> scheduling
    "collection",  # Task_Scheduling -> the apheresis
    "shipment",  # Task_Apheresis -> waiting for the courier
    "shipment",  # courier.picked_up -> in transit
    "manufacturing",  # shipment.delivered -> the receipt at manufacturing
    "manufacturing",
    "manufacturing",
    "release",  # mes.manufacturing_completed -> waiting for QC results (QA lane)
    "release",  # qc.results -> the QA release
    "shipment",  # Task_QaRelease -> the return pickup
    "shipment",
    "infusion",  # return.delivered -> the receipt at the centre
    "infusion",
    "infusion",
    "infusion",
    "infusion",
    "follow-up",  # Task_RecordInfusion -> day 28
    "follow-up",
    "completed",
]


def test_a_therapy_moves_through_the_phases_its_diagram_declares(app, api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", [])
    assert therapy["phase"] == "referral"
    seen = []
    for step in AUTOLOGOUS_HAPPY_PATH:
        therapy = take_steps(api, world, clock, therapy, [step])
        seen.append(therapy["phase"])
    assert seen == PHASES_AFTER
    listed = api.as_(world["coord"]).get("/api/v1/therapies?status=completed").get_json()["items"]
    assert [t["phase"] for t in listed if t["id"] == therapy["id"]] == ["completed"]
    with app.app_context():
        row = db.session.get(Therapy, therapy["id"])
        # the form examples: collected 2026-11-16 12:40, infused 2026-12-26 09:25 (UTC)
        assert row.collected_at.isoformat() == "2026-11-16T12:40:00+00:00"
        assert row.infused_at.isoformat() == "2026-12-26T09:25:00+00:00"


def test_the_therapy_page_header_shows_the_phase(app, api, world, clock, bundled):
    therapy = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH[:2])
    page = _text(_client(app, "coord"), f"/therapies/{therapy['id']}")
    assert re.search(r'data-testid="therapy-phase"[^>]*>Collection<', page)
