"""The programme's metrics (../shared/API.md, "Metrics"): counts, vein-to-vein, on-time rate, escalations, by site,
process and month, as JSON and CSV, each caller seeing their sites' therapies."""

from __future__ import annotations

import csv
import io

import pytest

from ..e2e.test_bundled_journeys import run_journey
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH
from ..support.journeys import fire, start

# The form examples the journey records: collected 2026-11-16 12:40, infused 2026-12-26 09:25 (UTC).
VEIN_TO_VEIN_HOURS = 956.8


@pytest.fixture
def programme(app, api, world, clock, bundled):
    """At SITE-A: one autologous therapy infused and followed up, two mini therapies (one escalated, one
    cancelled); at SITE-B one mini therapy."""
    infused = run_journey(api, world, clock, "autologous_car_t", AUTOLOGOUS_HAPPY_PATH)
    assert infused["status"] == "completed"
    late = start(api, world["coord"])
    cancelled = start(api, world["coord"])
    answer = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{cancelled['id']}/cancel", json={"reason_code": "PATIENT_WITHDREW"}
    )
    assert answer.status_code == 200
    clock.advance(hours=25)
    assert fire(app, late["id"])  # the 24 h enrolment window escalates
    elsewhere = start(api, world["coordb"], site="SITE-B")
    return {"infused": infused, "late": late, "cancelled": cancelled, "elsewhere": elsewhere}


def _metrics(api, token, **query):
    return api.as_(token).get("/api/v1/metrics", query_string=query)


def test_metrics_by_site(api, world, programme):
    answer = _metrics(api, world["admin"], group_by="site")
    assert answer.status_code == 200, answer.get_json()
    groups = {g["key"]: g for g in answer.get_json()["groups"]}
    assert set(groups) == {"SITE-A", "SITE-B"}
    a = groups["SITE-A"]
    assert (a["started"], a["completed"], a["cancelled"]) == (3, 1, 1)
    assert a["vein_to_vein_hours"] == {"p50": VEIN_TO_VEIN_HOURS, "p90": VEIN_TO_VEIN_HOURS}
    # Two milestones had a booked slot: the collection (the form says 2026-11-16, the slot ends on the 24th) and
    # the start of manufacturing (its message reached Tether on the 23rd, the slot ends on the 26th): both on time.
    assert a["on_time_rate"] == 1.0
    assert a["escalations"] == 1 and a["coi_mismatches"] == 0
    b = groups["SITE-B"]
    assert (b["started"], b["completed"], b["cancelled"], b["escalations"]) == (1, 0, 0, 0)
    assert b["vein_to_vein_hours"] == {"p50": None, "p90": None} and b["on_time_rate"] is None


def test_metrics_by_process_and_month_and_period(api, world, programme, clock):
    by_process = {
        g["key"]: g["started"] for g in _metrics(api, world["admin"], group_by="process").get_json()["groups"]
    }
    assert by_process == {"autologous_car_t": 1, "mini_therapy": 3}
    by_month = _metrics(api, world["admin"], group_by="month").get_json()["groups"]
    # the journey started on 2026-11-23 and ran past its day-28 follow-up: the others started in December
    assert [(g["key"], g["started"]) for g in by_month] == [("2026-11", 1), ("2026-12", 3)]
    none = _metrics(api, world["admin"], **{"from": "2030-01-01T00:00:00Z"}).get_json()["groups"]
    assert none == []


def test_metrics_as_csv(api, world, programme):
    answer = _metrics(api, world["admin"], group_by="site", format="csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [r["key"] for r in rows] == ["SITE-A", "SITE-B"]
    assert rows[0]["vein_to_vein_p50_hours"] == str(VEIN_TO_VEIN_HOURS) and rows[0]["started"] == "3"
    assert rows[1]["on_time_rate"] == ""


def test_each_caller_sees_their_sites(api, world, programme):
    groups = _metrics(api, world["coordb"]).get_json()["groups"]
    assert [(g["key"], g["started"]) for g in groups] == [("SITE-B", 1)]


@pytest.mark.parametrize(
    ("who", "query", "status", "code"),
    [
        ("logistics", {}, 403, "forbidden"),
        ("admin", {"group_by": "colour"}, 422, "invalid_request"),
        ("admin", {"format": "xml"}, 422, "invalid_request"),
        ("admin", {"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, 422, "invalid_request"),
        ("admin", {"from": "last week"}, 400, "invalid_filter"),
    ],
)
def test_bad_metrics_requests_are_refused(api, world, who, query, status, code):
    answer = _metrics(api, world[who], **query)
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)
