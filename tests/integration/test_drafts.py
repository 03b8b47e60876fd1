"""The studio's drafts through the API: started from an empty canvas or a deployed version, saved unfinished,
checked with every problem on its element, refused at deploy while a check fails, deployed, and never
reachable by site staff."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import AuditEntry, ProcessDefinition

from ..support.journeys import start
from ..support.pages import csrf

DRAFTS = "/api/v1/process-drafts"


def _draft_of_mini(api, world) -> dict:
    response = api.as_(world["designer"]).post(DRAFTS, json={"key": "mini_therapy"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_draft_from_an_empty_canvas_holds_a_start_event_and_is_listed(app, api, world):
    created = api.as_(world["designer"]).post(DRAFTS, json={"name": "Bone marrow v2"})
    assert created.status_code == 201
    draft = created.get_json()
    assert draft["name"] == "Bone marrow v2" and draft["based_on"] is None
    assert 'process id="bone_marrow_v2"' in draft["bpmn"] and "StartEvent_1" in draft["bpmn"]
    listed = api.as_(world["admin"]).get(DRAFTS).get_json()["items"]
    assert [d["id"] for d in listed] == [draft["id"]] and "bpmn" not in listed[0]
    with app.app_context():
        actions = db.session.execute(select(AuditEntry.action).where(AuditEntry.subject_id == draft["id"])).all()
        assert [a for (a,) in actions] == ["draft.created"]


def test_a_draft_from_a_deployed_version_starts_from_its_diagram_and_forms(api, world):
    draft = _draft_of_mini(api, world)
    assert draft["based_on"] == {"key": "mini_therapy", "version": 1}
    assert "mini-enrol.schema.json" in draft["forms"] and 'id="Task_Enrol"' in draft["bpmn"]
    checked = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/check").get_json()
    assert checked["ok"] and checked["problems"] == []
    assert checked["current"] == {"key": "mini_therapy", "version": 1, "active_therapies": 0}
    assert checked["diff"] == {"added": [], "removed": [], "changed": []}
    missing = api.as_(world["designer"]).post(DRAFTS, json={"key": "mini_therapy", "version": 9})
    assert missing.status_code == 404 and "version 9" in missing.get_json()["error"]["message"]


def test_a_problem_names_its_element_and_line_and_saving_an_unfinished_draft_is_fine(api, world):
    draft = _draft_of_mini(api, world)
    broken = draft["bpmn"].replace("mini-enrol.schema.json", "no-such-form.json")
    saved = api.as_(world["designer"]).put(f"{DRAFTS}/{draft['id']}", json={"bpmn": broken, "name": "Mini v2"})
    assert saved.status_code == 200 and saved.get_json()["name"] == "Mini v2"
    checked = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/check").get_json()
    assert not checked["ok"]
    (problem,) = checked["problems"]
    assert problem["element_id"] == "Task_Enrol" and isinstance(problem["line"], int)
    assert "no-such-form.json" in problem["message"]
    # The diagram as drawn (not saved yet) is checked when sent: the fixed one passes, the saved one still fails.
    fixed = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/check", json={"bpmn": draft["bpmn"]})
    assert fixed.get_json()["ok"]


def test_the_check_reports_every_problem_each_on_its_element_and_line_and_deploy_names_them_all(api, world):
    draft = _draft_of_mini(api, world)
    broken = draft["bpmn"].replace("mini-enrol.schema.json", "no-such-form.json")
    broken = broken.replace("'logistics'", "__import__('os').system('x')")
    designer = api.as_(world["designer"])
    checked = designer.post(f"{DRAFTS}/{draft['id']}/check", json={"bpmn": broken}).get_json()
    assert [p["element_id"] for p in checked["problems"]] == ["Task_Enrol", "Service_Notify"]
    assert all(isinstance(p["line"], int) for p in checked["problems"])
    assert checked["problems"][0]["line"] < checked["problems"][1]["line"]  # in the order of the file
    designer.put(f"{DRAFTS}/{draft['id']}", json={"bpmn": broken})
    refused = designer.post(f"{DRAFTS}/{draft['id']}/deploy").get_json()["error"]
    assert [p["element_id"] for p in refused["details"]["problems"]] == ["Task_Enrol", "Service_Notify"]


def test_a_draft_that_fails_a_check_is_refused_at_deploy_and_changes_nothing(app, api, world):
    draft = _draft_of_mini(api, world)
    unsafe = draft["bpmn"].replace("'logistics'", "__import__('os').system('x')")
    assert unsafe != draft["bpmn"]
    api.as_(world["designer"]).put(f"{DRAFTS}/{draft['id']}", json={"bpmn": unsafe})
    refused = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/deploy")
    body = refused.get_json()["error"]
    assert refused.status_code == 422 and body["code"] == "draft_invalid"
    assert body["details"]["problems"][0]["element_id"] == "Service_Notify"
    assert "Service_Notify" in body["message"]
    with app.app_context():
        versions = db.session.execute(select(ProcessDefinition.version)).scalars().all()
        assert versions == [1]


def test_a_deployed_draft_is_the_next_version_and_therapies_start_on_it(app, api, world):
    draft = _draft_of_mini(api, world)
    renamed = draft["bpmn"].replace("Enrol patient", "Enrol the patient")
    api.as_(world["designer"]).put(f"{DRAFTS}/{draft['id']}", json={"bpmn": renamed})
    checked = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/check").get_json()
    assert checked["diff"]["changed"] == ["Task_Enrol"]
    deployed = api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/deploy")
    assert deployed.status_code == 201 and deployed.get_json()["version"] == 2
    again = api.as_(world["designer"]).get(f"{DRAFTS}/{draft['id']}").get_json()
    assert again["based_on"] == {"key": "mini_therapy", "version": 2}
    assert start(api, world["coord"])["process"]["version"] == 2
    with app.app_context():
        actions = db.session.execute(select(AuditEntry.action).where(AuditEntry.subject_id == draft["id"])).all()
        assert [a for (a,) in actions] == ["draft.created", "draft.saved", "draft.deployed"]


def test_a_deleted_draft_is_gone(api, world):
    draft = _draft_of_mini(api, world)
    assert api.as_(world["designer"]).delete(f"{DRAFTS}/{draft['id']}").status_code == 204
    assert api.as_(world["designer"]).get(f"{DRAFTS}/{draft['id']}").status_code == 404
    assert api.as_(world["designer"]).post(f"{DRAFTS}/{draft['id']}/check").status_code == 404


@pytest.mark.parametrize("who", ["coord", "logistics", "qa", "auditor", "integrator"])
def test_site_staff_and_other_roles_never_reach_a_draft(api, world, who):
    draft = _draft_of_mini(api, world)
    client = api.as_(world[who])
    assert client.get(DRAFTS).status_code == 403
    assert client.get(f"{DRAFTS}/{draft['id']}").status_code == 403
    assert client.post(DRAFTS, json={"name": "x"}).status_code == 403
    assert client.put(f"{DRAFTS}/{draft['id']}", json={"bpmn": "<x/>"}).status_code == 403
    assert client.post(f"{DRAFTS}/{draft['id']}/deploy").status_code == 403


def test_bad_input_is_a_clear_422(api, world):
    draft = _draft_of_mini(api, world)
    designer = api.as_(world["designer"])
    assert designer.put(f"{DRAFTS}/{draft['id']}", json={}).status_code == 422
    assert designer.post(DRAFTS, json={"name": "x", "colour": "red"}).status_code == 422
    orphan = designer.post(DRAFTS, json={"version": 1})
    assert orphan.status_code == 422 and "key" in orphan.get_json()["error"]["details"]["fields"]
    garbage = designer.post(f"{DRAFTS}/{draft['id']}/check", json={"bpmn": "<bpmn:definitions"}).get_json()
    assert not garbage["ok"] and garbage["problems"][0]["message"]


def test_the_studio_pages_are_for_designers_only(app, world):
    from ..support.pages import signed_in

    coordinator = signed_in(app, "coord")
    assert coordinator.get("/studio").status_code == 403
    assert "Studio" not in coordinator.get("/tasks").get_data(as_text=True).split("<main", 1)[0]
    designer = signed_in(app, "designer")
    version_page = designer.get("/definitions/mini_therapy/versions/1").get_data(as_text=True)
    assert "Open in the studio" in version_page
    token = csrf(designer, "/studio")
    opened = designer.post("/studio", data={"key": "mini_therapy", "version": "1", "csrf_token": token})
    assert opened.status_code == 302
    draft_url = opened.headers["Location"]
    page = designer.get(draft_url).get_data(as_text=True)
    assert "mini_therapy v1" in page and "mini-enrol.schema.json" in page  # the draft's own forms are offered
    assert coordinator.get(draft_url).status_code == 403
    # The page's calls carry the CSRF token as a header; without it they are refused.
    assert designer.post(f"{draft_url}/check", json={}).status_code == 400
    checked = designer.post(f"{draft_url}/check", json={}, headers={"X-CSRFToken": token}).get_json()
    assert checked["ok"] and checked["current"]["version"] == 1
    broken = designer.post(
        f"{draft_url}/deploy",
        json={"bpmn": "<bpmn:definitions"},
        headers={"X-CSRFToken": token},
    )
    assert broken.status_code == 422 and broken.get_json()["error"]["code"] == "draft_invalid"
    assert designer.get("/studio").get_data(as_text=True).count("mini_therapy v1") == 1


def test_a_form_preview_shows_the_form_as_site_staff_see_it_with_its_example(app, world):
    from ..support.pages import signed_in

    designer = signed_in(app, "designer")
    token = csrf(designer, "/studio")
    opened = designer.post("/studio", data={"name": "Preview", "csrf_token": token})
    draft_url = opened.headers["Location"]
    shipped = designer.get(f"{draft_url}/form-preview?form=enrolment.schema.json&ui=enrolment.uischema.json")
    page = shipped.get_data(as_text=True)
    assert shipped.status_code == 200 and "filled with the form's first example" in page
    assert 'name="data.consent_date"' in page and 'value="2026-11-02"' in page
    assert designer.get(f"{draft_url}/form-preview?form=no-such.json").status_code == 404
    assert signed_in(app, "coord").get(f"{draft_url}/form-preview?form=enrolment.schema.json").status_code == 403
    # A draft of a deployed version previews the forms it keeps (uploaded with that version).
    mini = designer.post("/studio", data={"key": "mini_therapy", "csrf_token": token}).headers["Location"]
    kept = designer.get(f"{mini}/form-preview?form=mini-enrol.schema.json").get_data(as_text=True)
    assert 'name="data.patient_initials"' in kept and "Enrol patient" in kept


def test_an_engine_refusal_while_deploying_from_the_studio_answers_json(app, world, monkeypatch):
    """A diagram that passed its check but is refused while deploying (a called version deployed meanwhile, say)
    reaches the page's script as the API's error body, never as an HTML error page."""
    from engine.errors import DefinitionInvalid
    from server.workflow import definitions

    from ..support.pages import signed_in

    def refuse(*args, **kwargs):
        raise DefinitionInvalid("Called version changed meanwhile.", element_id="Task_Enrol", line=7)

    designer = signed_in(app, "designer")
    token = csrf(designer, "/studio")
    draft_url = designer.post("/studio", data={"key": "mini_therapy", "csrf_token": token}).headers["Location"]
    monkeypatch.setattr(definitions, "deploy", refuse)
    answer = designer.post(f"{draft_url}/deploy", json={}, headers={"X-CSRFToken": token})
    assert answer.status_code == 422
    assert answer.get_json()["error"] == {
        "code": "invalid_definition",
        "message": "Called version changed meanwhile.",
        "details": {"element_id": "Task_Enrol", "line": 7},
    }


def test_deploying_from_the_studio_offers_the_migration_of_the_therapies_on_the_version_it_follows(app, api, world):
    from ..support.pages import signed_in

    start(api, world["coord"])  # one active therapy on mini_therapy v1
    draft = _draft_of_mini(api, world)
    designer = signed_in(app, "designer")
    url = f"/studio/{draft['id']}"
    changed = draft["bpmn"].replace('name="Enrol patient"', 'name="Enrol the patient"')
    deployed = designer.post(
        f"{url}/deploy", json={"bpmn": changed, "etag": draft["etag"]}, headers={"X-CSRFToken": csrf(designer, url)}
    )
    assert deployed.status_code == 201, deployed.get_json()
    answer = deployed.get_json()
    assert (answer["version"], answer["created"], answer["active_therapies"]) == (2, True, 1)
    assert answer["migrate_url"] == "/definitions/mini_therapy/migrate?from=1&to=2"
