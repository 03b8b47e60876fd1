"""The control tower at scale: phases from the diagram, chips to filter by, search, the late and at-risk first,
cursor paging, the vein-to-vein column, and the cheap refresh its live updates poll."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import update

from engine.coi import parse_coi
from server.store.extensions import db
from server.store.models import Therapy

from ..e2e.test_bundled_journeys import run_journey, take_steps
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from ..support.journeys import complete_only_task, fire
from ..support.pages import signed_in


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
    page = _text(signed_in(app, "coord"), f"/therapies/{therapy['id']}")
    assert re.search(r'data-testid="therapy-phase"[^>]*>Collection<', page)


ENROLMENT = {"eligible": True, "patient_initials": "AB"}


# -- the tower over the mini diagram (no phases of its own: they are set on the rows here) --------------------


def _start(api, token, site="SITE-A", patient="PT-1") -> dict:
    answer = api.as_(token).post(
        "/api/v1/therapies", json={"process_key": "mini_therapy", "site": site, "patient": {"reference": patient}}
    )
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def _set(app, therapy_id: str, **values) -> None:
    with app.app_context():
        db.session.execute(update(Therapy).where(Therapy.id == therapy_id).values(**values))
        db.session.commit()


def _ids(page: str) -> list[str]:
    return re.findall(r'data-therapy-id="([^"]+)"', page)


def _chips(page: str) -> dict[str, int]:
    return {
        chip: int(n) for chip, n in re.findall(r'data-chip="([^"]+)"[^>]*><span class="n">(\d+)</span>', page, re.S)
    }


def _href(page: str, chip: str) -> str:
    return html.unescape(re.search(rf'<a class="chip[^"]*" href="([^"]+)" data-chip="{chip}"', page).group(1))


def test_chips_count_the_phases_and_filter_by_them(app, api, world):
    made = [_start(api, world["coord"], patient=f"PT-{i}") for i in range(5)]
    for therapy, phase in zip(made, ["manufacturing", "manufacturing", "collection", "follow-up", None], strict=True):
        _set(app, therapy["id"], phase=phase)
    held = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{made[0]['id']}/hold", json={"reason_code": "PATIENT_UNWELL"}
    )
    assert held.status_code == 200, held.get_json()
    coordinator = signed_in(app, "coord")
    page = _text(coordinator, "/dashboard")
    chips = _chips(page)
    assert chips == {
        "collection": 1,
        "manufacturing": 2,
        "follow-up": 1,
        "none": 1,
        "on_hold": 1,
        "late": 0,
        "at_risk": 5,
    }
    # in the journey's order, named for people
    assert [name for name in re.findall(r'data-chip="([^"]+)"', page)][:5] == [
        "all",
        "collection",
        "manufacturing",
        "follow-up",
        "none",
    ]
    assert "Follow-up</a>" in page and "No phase yet</a>" in page
    # a chip is a link to the tower filtered by it; the chip is then marked, and a second click clears it
    filtered = _text(coordinator, _href(page, "manufacturing"))
    assert sorted(_ids(filtered)) == sorted(t["id"] for t in made[:2])
    assert re.search(r'class="chip chip-phase chip-on" href="/dashboard"[^>]*data-chip="manufacturing"', filtered)
    assert 'data-testid="tower-total">2 therapies' in filtered
    assert _ids(_text(coordinator, _href(page, "none"))) == [made[4]["id"]]
    assert _ids(_text(coordinator, _href(page, "on_hold"))) == [made[0]["id"]]
    # the rows fragment (the live refresh) takes the same filters; the API's list too
    assert sorted(_ids(_text(coordinator, "/dashboard/rows?phase=manufacturing"))) == sorted(t["id"] for t in made[:2])
    listed = api.as_(world["coord"]).get("/api/v1/therapies?phase=follow-up").get_json()["items"]
    assert [t["id"] for t in listed] == [made[3]["id"]]
    assert [t["id"] for t in api.as_(world["coord"]).get("/api/v1/therapies?phase=none").get_json()["items"]] == [
        made[4]["id"]
    ]


def test_search_by_coi_site_and_patient_only_where_the_patient_may_be_known(app, api, world):
    here = _start(api, world["coord"], patient="PT-ALPHA-7")
    other = _start(api, world["coord"], patient="PT-BETA-9")
    there = _start(api, world["coordb"], site="SITE-B", patient="PT-GAMMA-3")
    coordinator, admin, qa = signed_in(app, "coord"), signed_in(app, "admin"), signed_in(app, "qa")
    eye = parse_coi(here["coi"]).eye_readable
    for written in (here["coi"], eye, eye.lower(), f"&/{here['coi']}"):  # any written form of the COI
        assert _ids(_text(coordinator, f"/dashboard?q={quote(written)}")) == [here["id"]], written
        assert _ids(_text(qa, f"/dashboard?q={quote(written)}")) == [here["id"]], written
    assert _ids(_text(coordinator, f"/dashboard?q={here['coi'][-6:]}")) == [here["id"]]  # part of one
    # a site's code finds the therapies it takes part in
    assert sorted(_ids(_text(admin, "/dashboard?q=site-a"))) == sorted([here["id"], other["id"]])
    assert _ids(_text(admin, "/dashboard?q=SITE-B")) == [there["id"]]
    # the patient reference (its beginning, any case) for those who may know the patient...
    assert _ids(_text(coordinator, "/dashboard?q=pt-alpha")) == [here["id"]]
    assert _ids(_text(admin, "/dashboard?q=PT-GAMMA-3")) == [there["id"]]
    assert 'placeholder="COI, site or patient reference"' in _text(coordinator, "/dashboard")
    # ... and not for the others: QA sees every therapy but knows no patient, SITE-B knows its own only
    assert "No therapies match." in _text(qa, "/dashboard?q=PT-ALPHA-7")
    assert 'placeholder="COI, site"' in _text(qa, "/dashboard")
    assert "No therapies match." in _text(signed_in(app, "coordb"), "/dashboard?q=PT-ALPHA-7")
    # the API's list searches alike
    found = api.as_(world["qa"]).get("/api/v1/therapies", query_string={"q": eye}).get_json()["items"]
    assert [t["id"] for t in found] == [here["id"]]
    assert api.as_(world["qa"]).get("/api/v1/therapies?q=PT-ALPHA-7").get_json()["items"] == []
    assert [t["id"] for t in api.as_(world["coord"]).get("/api/v1/therapies?q=PT-ALPHA-7").get_json()["items"]] == [
        here["id"]
    ]
    # a search with wildcard characters is taken literally
    assert "No therapies match." in _text(admin, "/dashboard?q=%25")
    assert "No therapies match." in _text(admin, "/dashboard?q=PT_")


def test_the_late_come_first_then_the_at_risk_then_by_deadline_then_the_newest(app, api, world, clock):
    # The mini diagram's enrolment is due 24 h after the start; once enrolled, a therapy waits without a deadline.
    waiting_older = _start(api, world["coord"], patient="PT-W1")
    complete_only_task(api, world["coord"], waiting_older["id"], ENROLMENT)
    clock.advance(hours=1)
    waiting_newer = _start(api, world["coord"], patient="PT-W2")
    complete_only_task(api, world["coord"], waiting_newer["id"], ENROLMENT)
    late = _start(api, world["coord"], patient="PT-LATE")
    clock.advance(hours=20)
    soon = _start(api, world["coord"], patient="PT-SOON")
    clock.advance(hours=5)  # the first enrolment is 1 h late; the second is due in 19 h
    assert fire(app, late["id"])  # its escalation fires: the task keeps its deadline, and stays late
    page = _text(signed_in(app, "coord"), "/dashboard")
    assert _ids(page) == [late["id"], soon["id"], waiting_newer["id"], waiting_older["id"]]
    rows = dict(zip(_ids(page), re.findall(r"<tr data-therapy-id=[^>]*>(.*?)</tr>", page, re.S), strict=True))
    assert 'badge-late">Late' in rows[late["id"]] and "Within 24 h" in rows[soon["id"]]
    assert re.search(rf'data-therapy-id="{late["id"]}" class="late"', page)
    assert _chips(page)["late"] == 1 and _chips(page)["at_risk"] == 1
    assert _ids(_text(signed_in(app, "coord"), "/dashboard?urgency=late")) == [late["id"]]
    assert _ids(_text(signed_in(app, "coord"), "/dashboard?urgency=at_risk")) == [soon["id"]]


def test_cursor_paging_walks_every_row_once_in_order(app, api, world, clock):
    made = []
    for i in range(7):
        made.append(_start(api, world["coord"], patient=f"PT-P{i}"))
        if i % 2:
            complete_only_task(api, world["coord"], made[-1]["id"], ENROLMENT)
        clock.advance(minutes=10)
    coordinator = signed_in(app, "coord")
    whole = _ids(_text(coordinator, "/dashboard"))
    assert sorted(whole) == sorted(t["id"] for t in made)
    seen, url, pages = [], "/dashboard?limit=3", 0
    while url:
        page = _text(coordinator, url)
        seen += _ids(page)
        pages += 1
        assert 'data-testid="tower-total">7 therapies' in page
        found = re.search(r'href="([^"]+)" rel="next"', page)
        url = html.unescape(found.group(1)) + "&limit=3" if found else None
        if pages > 1:
            assert 'data-page="first"' in page
    assert pages == 3 and seen == whole
    # a cursor this server did not hand out starts from the first page
    assert _ids(_text(coordinator, "/dashboard?cursor=bm9uc2Vuc2U&limit=3")) == whole[:3]


def test_the_vein_to_vein_column(app, api, world, clock):
    running = _start(api, world["coord"], patient="PT-V1")
    infused = _start(api, world["coord"], patient="PT-V2")
    waiting = _start(api, world["coord"], patient="PT-V3")
    now = clock()
    _set(app, running["id"], collected_at=now - timedelta(days=10, hours=6))
    _set(
        app,
        infused["id"],
        collected_at=now - timedelta(days=30),
        infused_at=now - timedelta(days=30) + timedelta(days=20, hours=12),
    )
    page = _text(signed_in(app, "coord"), "/dashboard")
    cells = dict(re.findall(r'data-therapy-id="([^"]+)".*?data-col="v2v"[^>]*>([^<]*)<', page, re.S))
    assert cells == {running["id"]: "10.2 d", infused["id"]: "20.5 d", waiting["id"]: "—"}
    assert 'title="Collection to infusion: 20 d 12 h"' in page and 'title="Since collection: 10 d 6 h"' in page


# -- live updates: a cheap question every few seconds, nothing held open ----------------------------------------


def test_every_open_tab_gets_updates_and_none_holds_a_stream(app, api, world):
    app.config["EVENTS_MAX_STREAMS"] = 1  # a tab that polls needs no stream slot
    first = _start(api, world["coord"], patient="PT-L1")
    tabs = [signed_in(app, "coord") for _ in range(10)]
    versions = []
    for tab in tabs:
        answer = tab.get("/dashboard/rows")
        assert answer.status_code == 200 and first["id"] in answer.get_data(as_text=True)
        versions.append(answer.headers["X-Tower-Version"])
    # nothing changed: 204, no body, the same version
    for tab, version in zip(tabs, versions, strict=True):
        unchanged = tab.get(f"/dashboard/rows?since={version}")
        assert unchanged.status_code == 204 and unchanged.get_data() == b""
        assert unchanged.headers["X-Tower-Version"] == version
    # a change through the API reaches every tab at its next question
    second = _start(api, world["coord"], patient="PT-L2")
    for tab, version in zip(tabs, versions, strict=True):
        changed = tab.get(f"/dashboard/rows?since={version}")
        assert changed.status_code == 200 and second["id"] in changed.get_data(as_text=True)
        assert changed.headers["X-Tower-Version"] != version
    # a closed tab held nothing: the one stream slot is still free
    stream = tabs[0].get("/live/events", buffered=False)
    assert stream.status_code == 200
    stream.close()
    again = tabs[1].get("/live/events", buffered=False)
    assert again.status_code == 200  # the closed stream gave its slot back
    again.close()


def test_the_tower_page_polls_instead_of_opening_a_stream(app, world):
    page = _text(signed_in(app, "coord"), "/dashboard")
    assert re.search(r'data-rows-url="/dashboard/rows[^"]*" data-version="\d+\.\d+"', page)
    script = (Path(__file__).resolve().parents[2] / "server/web/static/dashboard.js").read_text()
    assert "since=" in script and "EventSource" not in script
