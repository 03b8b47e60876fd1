"""Alerts that can be triaged: the ones meant for me by default, filters by severity, kind, therapy and age (API
and page alike), a page at a time, bulk acknowledgement with one note (all or nothing), the note rule, and the
open counts by severity in every page's header."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from server.oversight import alerts
from server.store.extensions import db
from server.store.models import Alert, AuditEntry, Site, Therapy
from server.store.uow import unit_of_work

from ..support.journeys import start
from ..support.pages import signed_in
from .conftest import PASSWORD

# name: (kind, severity, role, site, hours ago)
ALERTS = {
    "late": ("escalation", "high", "coordinator", "SITE-A", 2),
    "slot": ("notification", "low", "manufacturing", "SITE-A", 0.5),
    "label": ("coi_mismatch", "critical", None, "SITE-A", 30),
    "other-site": ("notification", "medium", "coordinator", "SITE-B", 240),
    "incident": ("incident", "high", "admin", "SITE-A", 200),
}


def _raise(app, clock, kind, severity, role, site, hours, therapy_id=None, message=None) -> str:
    with app.app_context(), unit_of_work():
        site_id = db.session.execute(select(Site.id).where(Site.code == site)).scalar_one()
        therapy = db.session.get(Therapy, therapy_id) if therapy_id else None
        alert = alerts.raise_alert(
            therapy, kind, message or f"{kind} {severity}", "test", severity=severity, role=role, site_id=site_id
        )
        alert.raised_at = clock() - timedelta(hours=hours)
        return alert.id


@pytest.fixture
def raised(app, world, clock) -> dict[str, str]:
    return {name: _raise(app, clock, *spec) for name, spec in ALERTS.items()}


def _ids(api, token, query="") -> set[str]:
    answer = api.as_(token).get(f"/api/v1/alerts{query}")
    assert answer.status_code == 200, answer.get_json()
    return {a["id"] for a in answer.get_json()["items"]}


def _names(raised, *names) -> set[str]:
    return {raised[n] for n in names}


def test_the_api_filters_by_whom_severity_kind_and_age(api, world, raised):
    coord = world["coord"]
    assert _ids(api, coord) == _names(raised, "late", "slot", "label", "incident")  # what SITE-A may see
    assert _ids(api, coord, "?for_me=true") == _names(raised, "late", "label")  # its role's, or nobody's
    assert _ids(api, coord, "?for_me=false") == _ids(api, coord)
    assert _ids(api, world["mfg"], "?for_me=true") == _names(raised, "slot", "label")
    assert _ids(api, world["admin"], "?for_me=true") == _names(raised, "label", "incident")
    assert _ids(api, world["coordb"], "?for_me=true") == _names(raised, "other-site")
    assert _ids(api, coord, "?severity=high") == _names(raised, "late", "incident")
    assert _ids(api, coord, "?kind=notification") == _names(raised, "slot")
    assert _ids(api, coord, "?older_than=1h") == _names(raised, "late", "label", "incident")
    assert _ids(api, coord, "?older_than=24h") == _names(raised, "label", "incident")
    assert _ids(api, coord, "?older_than=7d&for_me=true") == set()
    assert _ids(api, world["admin"], "?older_than=7d") == _names(raised, "other-site", "incident")
    assert _ids(api, coord, "?severity=critical&for_me=true&status=open") == _names(raised, "label")


@pytest.mark.parametrize("query", ["severity=urgent", "older_than=2h", "for_me=maybe", "status=closed"])
def test_an_unknown_filter_value_is_a_400_naming_it(api, world, raised, query):
    answer = api.as_(world["coord"]).get(f"/api/v1/alerts?{query}")
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_filter"


def _acknowledgements(app) -> int:
    with app.app_context():
        return db.session.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "alert.acknowledged")
        ).scalar_one()


def _status(app, alert_id) -> str:
    with app.app_context():
        return db.session.get_one(Alert, alert_id).status


def test_bulk_acknowledgement_takes_one_note_and_audits_each(app, api, world, raised):
    before = _acknowledgements(app)
    answer = api.as_(world["coord"]).post(
        "/api/v1/alerts/acknowledge", json={"alert_ids": [raised["late"], raised["label"]], "note": "Called MFG-1"}
    )
    assert answer.status_code == 200, answer.get_json()
    items = answer.get_json()["items"]
    assert [a["id"] for a in items] == [raised["late"], raised["label"]]
    assert {(a["status"], a["acknowledged_by"], a["note"]) for a in items} == {
        ("acknowledged", "coord", "Called MFG-1")
    }
    assert _acknowledgements(app) == before + 2
    assert _ids(api, world["coord"], "?for_me=true&status=open") == set()


def test_bulk_acknowledgement_is_all_or_nothing(app, api, world, raised):
    coord = api.as_(world["coord"])
    assert coord.post(f"/api/v1/alerts/{raised['late']}/acknowledge", json={"note": "done"}).status_code == 200
    before = _acknowledgements(app)

    again = coord.post("/api/v1/alerts/acknowledge", json={"alert_ids": [raised["slot"], raised["late"]], "note": "x"})
    assert again.status_code == 409
    error = again.get_json()["error"]
    assert error["code"] == "already_acknowledged" and error["details"]["alert_ids"] == [raised["late"]]
    assert "coord" in error["message"]

    unseen = api.as_(world["coordb"]).post(
        "/api/v1/alerts/acknowledge", json={"alert_ids": [raised["other-site"], raised["slot"]], "note": "x"}
    )
    assert unseen.status_code == 404 and unseen.get_json()["error"]["details"]["alert_ids"] == [raised["slot"]]

    reader = api.as_(world["auditor"]).post("/api/v1/alerts/acknowledge", json={"alert_ids": [raised["slot"]]})
    assert reader.status_code == 403
    assert coord.post("/api/v1/alerts/acknowledge", json={"alert_ids": []}).status_code == 422
    assert _acknowledgements(app) == before
    assert (_status(app, raised["slot"]), _status(app, raised["other-site"])) == ("open", "open")


def test_a_note_is_required_for_high_and_critical_alerts_only(app, api, world, raised):
    coord = api.as_(world["coord"])
    for body in ({}, {"note": "   "}):
        refused = coord.post(f"/api/v1/alerts/{raised['late']}/acknowledge", json=body)
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "note_required"
    mixed = coord.post("/api/v1/alerts/acknowledge", json={"alert_ids": [raised["slot"], raised["label"]]})
    assert mixed.status_code == 422
    assert mixed.get_json()["error"]["details"] == {"field": "note", "alert_ids": [raised["label"]]}
    assert _status(app, raised["slot"]) == "open"

    low = coord.post("/api/v1/alerts/acknowledge", json={"alert_ids": [raised["slot"]]})
    assert low.status_code == 200 and low.get_json()["items"][0]["note"] == ""
    medium = api.as_(world["coordb"]).post(f"/api/v1/alerts/{raised['other-site']}/acknowledge")
    assert medium.status_code == 200, medium.get_json()


# -- the page ------------------------------------------------------------------------------------------------
def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _shown(page: str) -> set[str]:
    return set(re.findall(r'data-alert-id="([^"]+)"', page))


def test_the_page_shows_mine_by_default_and_keeps_its_filters_in_the_url(app, world, raised):
    client = signed_in(app)
    mine = client.get("/alerts").get_data(as_text=True)
    assert _shown(mine) == _names(raised, "late", "label")
    assert "manufacturing" not in mine.split('data-testid="alerts"')[1]  # no other role's notification
    assert _shown(client.get("/alerts?scope=all").get_data(as_text=True)) == _names(
        raised, "late", "slot", "label", "incident"
    )
    filtered = client.get("/alerts?scope=all&severity=high&age=1h").get_data(as_text=True)
    assert _shown(filtered) == _names(raised, "late", "incident")
    assert '<option value="high" selected>' in filtered and '<option value="1h" selected>' in filtered
    assert _shown(client.get("/alerts?kind=coi_mismatch").get_data(as_text=True)) == _names(raised, "label")
    # The switch to all keeps the filters; nonsense values are dropped, never an error.
    assert 'href="/alerts?scope=mine&amp;severity=high&amp;age=1h"' in filtered
    assert _shown(client.get("/alerts?severity=urgent&age=2h&page=x").get_data(as_text=True)) == _names(
        raised, "late", "label"
    )


def test_the_page_filters_by_therapy_coi_or_patient(app, api, world, clock, raised):
    therapy = start(api, world["coord"])
    mine = _raise(app, clock, "escalation", "high", "coordinator", "SITE-A", 1, therapy_id=therapy["id"])
    client = signed_in(app)
    for text in (therapy["coi"], therapy["id"], "PT-1"):
        assert _shown(client.get("/alerts", query_string={"therapy": text}).get_data(as_text=True)) == {mine}
    nothing = client.get("/alerts", query_string={"therapy": "PT-NOBODY"}).get_data(as_text=True)
    assert _shown(nothing) == set() and "No open alerts for you that match these filters." in nothing
    assert _ids(api, world["coord"], f"?therapy_id={therapy['id']}") == {mine}


def test_the_page_goes_a_page_at_a_time(app, world, clock):
    made = [_raise(app, clock, "notification", "low", "coordinator", "SITE-A", hours) for hours in range(30)]
    client = signed_in(app)
    first = client.get("/alerts").get_data(as_text=True)
    second = client.get("/alerts?page=2").get_data(as_text=True)
    assert len(_shown(first)) == 25 and _shown(second) == set(made[25:])
    assert "30 alerts, page 1 of 2" in first and 'href="/alerts?page=2"' in first
    assert 'href="/alerts?page=1"' in second


def test_the_page_acknowledges_ticked_alerts_with_one_note(app, world, raised):
    client = signed_in(app)
    page = client.get("/alerts").get_data(as_text=True)
    assert 'form="bulk-ack"' in page and 'action="/alerts/acknowledge"' in page
    answer = client.post(
        "/alerts/acknowledge",
        data={"csrf_token": _csrf(page), "alert_id": [raised["late"], raised["label"]], "back": "/alerts"},
    )
    assert answer.status_code == 302
    shown = client.get("/alerts").get_data(as_text=True)
    assert "Not acknowledged: Write a note saying what was done" in shown
    assert _status(app, raised["late"]) == "open"

    client.post(
        "/alerts/acknowledge",
        data={"csrf_token": _csrf(shown), "alert_id": [raised["late"], raised["label"]], "note": "Both handled"},
    )
    done = client.get("/alerts").get_data(as_text=True)
    assert "2 alerts acknowledged." in done and _shown(done) == set()
    assert (_status(app, raised["late"]), _status(app, raised["label"])) == ("acknowledged", "acknowledged")
    # A low alert is acknowledged on its own without a note; the page says which need one.
    all_page = client.get("/alerts?scope=all").get_data(as_text=True)
    assert f'<label for="note-{raised["slot"]}">Note: what was done (optional)</label>' in all_page
    client.post(f"/alerts/{raised['slot']}/acknowledge", data={"csrf_token": _csrf(all_page), "note": ""})
    assert _status(app, raised["slot"]) == "acknowledged"


def _header_counts(page: str) -> dict[str, tuple[int, str]]:
    header = page.split('data-testid="alert-counts"')[1].split("</p>")[0]
    return {
        severity: (int(count), href.replace("&amp;", "&"))
        for href, severity, count, _ in re.findall(r'href="([^"]+)" data-severity="(\w+)">(\d+) (\w+)</a>', header)
    }


def test_every_page_header_counts_my_open_alerts_by_severity(app, api, world, raised, clock):
    client = signed_in(app)
    counts = _header_counts(client.get("/tasks").get_data(as_text=True))
    assert counts == {"critical": (1, "/alerts?severity=critical"), "high": (1, "/alerts?severity=high")}
    for severity, (count, href) in counts.items():
        assert len(_shown(client.get(href).get_data(as_text=True))) == count, severity
    _raise(app, clock, "escalation", "high", "coordinator", "SITE-A", 0)
    assert _header_counts(client.get("/alerts").get_data(as_text=True))["high"][0] == 2
    api.as_(world["coord"]).post(f"/api/v1/alerts/{raised['label']}/acknowledge", json={"note": "relabelled"})
    assert "critical" not in _header_counts(client.get("/dashboard").get_data(as_text=True))
    assert _header_counts(signed_in(app, "mfg").get("/tasks").get_data(as_text=True)) == {
        "low": (1, "/alerts?severity=low")
    }


def test_a_notification_goes_to_the_site_of_the_party_its_role_works_for(app, api, world):
    from server.access import accounts

    with app.app_context():
        accounts.add_site("COURIER-9", "Courier 9", "logistics", "test")
        accounts.add_user("courier", ["logistics"], ["COURIER-9"], "Courier Person", PASSWORD, "test")
        courier = accounts.issue_token("courier", "test", "test")
    coord = api.as_(world["coord"])
    therapy = coord.post(
        "/api/v1/therapies",
        json={
            "process_key": "mini_therapy",
            "site": "SITE-A",
            "patient": {"reference": "PT-9"},
            "parties": {"logistics": "COURIER-9"},
        },
    ).get_json()
    [task] = coord.get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"]
    done = coord.post(
        f"/api/v1/tasks/{task['id']}/complete", json={"data": {"eligible": True, "patient_initials": "AB"}}
    )
    assert done.status_code == 200, done.get_json()
    # The diagram's notify names the logistics role and no site: the courier's people are told, not SITE-A's.
    [alert] = api.as_(courier).get(f"/api/v1/alerts?therapy_id={therapy['id']}&for_me=true").get_json()["items"]
    assert (alert["kind"], alert["role"], alert["data"]["site"]) == ("notification", "logistics", "COURIER-9")
    assert _ids(api, world["logistics"], f"?therapy_id={therapy['id']}") == set()


def test_the_therapy_page_links_to_its_alerts_on_the_alerts_page(app, api, world, clock, raised):
    therapy = start(api, world["coord"])
    mine = _raise(app, clock, "notification", "low", "manufacturing", "SITE-A", 1, therapy_id=therapy["id"])
    client = signed_in(app)
    page = client.get(f"/therapies/{therapy['id']}").get_data(as_text=True)
    [href] = re.findall(r'href="(/alerts\?[^"]+)">This therapy.s alerts', page)
    assert _shown(client.get(href.replace("&amp;", "&")).get_data(as_text=True)) == {mine}


def test_a_late_delivery_escalates_to_the_therapys_courier(app, api, world, clock):
    from server.access import accounts
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    from ..scenario_data import form_data
    from ..support.journeys import complete, deliver, fire, tasks_of

    with app.app_context():
        deploy_bundled(project_root() / "processes")
        accounts.add_site("COURIER-9", "Courier 9", "logistics", "test")
        accounts.add_user("courier", ["logistics"], ["COURIER-9"], "Courier Person", PASSWORD, "test")
        courier = accounts.issue_token("courier", "test", "test")
    body = {"process_key": "autologous_car_t", "site": "SITE-A", "patient": {"reference": "PT-LATE"}}
    answer = api.as_(world["coord"]).post("/api/v1/therapies", json={**body, "parties": {"logistics": "COURIER-9"}})
    assert answer.status_code == 201, answer.get_json()
    therapy = answer.get_json()
    for _ in ("Task_Enrolment", "Task_Scheduling", "Task_Apheresis"):
        [task] = tasks_of(api, world["coord"], therapy["id"])
        done = complete(api, world["coord"], task["id"], form_data(task["form"]["name"], therapy["coi"]))
        assert done.status_code == 200, done.get_json()
    deliver(api, world, therapy, "courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"})
    clock.advance(hours=24, seconds=1)
    assert fire(app, therapy["id"]) is True
    # The late receipt is manufacturing's task, but the escalation asks logistics: the therapy's courier.
    mine = api.as_(courier).get(f"/api/v1/alerts?therapy_id={therapy['id']}&for_me=true&kind=escalation")
    [escalation] = mine.get_json()["items"]
    assert (escalation["role"], escalation["data"]["site"]) == ("logistics", "COURIER-9")
    assert "the logistics role at COURIER-9 is asked to act" in escalation["message"]
    assert _ids(api, world["logistics"], f"?therapy_id={therapy['id']}&kind=escalation") == set()
