"""A draft's own decision tables and forms through the API: kept with the draft, checked as an upload checks them
(a bad file is a 422 naming the file and line, and changes nothing), checked with the diagram (a business rule task
whose decision is missing is a problem pinned on that task), carried into the deployed version, audited; and two
designers saving one draft never overwrite each other unseen (If-Match, 409 draft_changed)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import AuditEntry

from ..conftest import FIXTURES
from ..support.journeys import complete_only_task, start

DRAFTS = "/api/v1/process-drafts"
DIAGRAM = (FIXTURES / "decision.bpmn").read_text()
TABLE = (FIXTURES / "manufacturing-site.dmn").read_text()
XML = {"Content-Type": "application/xml"}


def _draft(api, world) -> dict:
    created = api.as_(world["designer"]).post(DRAFTS, json={"name": "Decision therapy"})
    draft = created.get_json()
    saved = api.as_(world["designer"]).put(f"{DRAFTS}/{draft['id']}", json={"bpmn": DIAGRAM})
    assert saved.status_code == 200, saved.get_json()
    return saved.get_json()


def _actions(app, draft_id: str) -> list[str]:
    with app.app_context():
        rows = db.session.execute(select(AuditEntry.action).where(AuditEntry.subject_id == draft_id)).all()
        return [a for (a,) in rows]


def test_a_decision_table_kept_with_the_draft_is_checked_with_it_deployed_with_it_and_runs(app, api, world):
    draft = _draft(api, world)
    designer = api.as_(world["designer"])
    checked = designer.post(f"{DRAFTS}/{draft['id']}/check").get_json()
    (missing,) = [p for p in checked["problems"] if p["element_id"] == "Rule_Site"]
    assert "manufacturing_site" in missing["message"] and isinstance(missing["line"], int)

    put = designer.put(f"{DRAFTS}/{draft['id']}/decisions/site.dmn", data=TABLE, headers=XML)
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["decisions"] == ["site.dmn"] and put.headers["ETag"] == f'"{put.get_json()["etag"]}"'
    listed = designer.get(f"{DRAFTS}/{draft['id']}/decisions").get_json()["items"]
    assert listed == [
        {
            "name": "site.dmn",
            "decision_id": "manufacturing_site",
            "decision_name": "Manufacturing site by region and weight",
        }
    ]
    served = designer.get(f"{DRAFTS}/{draft['id']}/decisions/site.dmn")
    assert served.mimetype == "application/xml" and served.get_data(as_text=True) == TABLE
    assert designer.post(f"{DRAFTS}/{draft['id']}/check").get_json()["ok"]

    # A changed table (the rule for light EU patients now picks MFG-3) goes with the deployed version.
    changed = TABLE.replace('id="Rule_EU_Light_Site"><text>"MFG-2"', 'id="Rule_EU_Light_Site"><text>"MFG-3"')
    assert changed != TABLE
    designer.put(f"{DRAFTS}/{draft['id']}/decisions/site.dmn", data=changed, headers=XML)
    deployed = designer.post(f"{DRAFTS}/{draft['id']}/deploy")
    assert deployed.status_code == 201, deployed.get_json()
    therapy = start(api, world["coord"], "decision_therapy")
    complete_only_task(api, world["coord"], therapy["id"], {"region": "EU", "weight_kg": 40})
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["manufacturing_site"] == "MFG-3"
    assert _actions(app, draft["id"]) == [
        "draft.created",
        "draft.saved",
        "draft.decision_saved",
        "draft.decision_saved",
        "draft.deployed",
    ]
    # A draft opened from that version starts with its table.
    again = designer.post(DRAFTS, json={"key": "decision_therapy"}).get_json()
    assert again["decisions"] == ["site.dmn"]

    removed = designer.delete(f"{DRAFTS}/{draft['id']}/decisions/site.dmn")
    assert removed.status_code == 200 and removed.get_json()["decisions"] == []
    assert designer.delete(f"{DRAFTS}/{draft['id']}/decisions/site.dmn").status_code == 404
    assert not designer.post(f"{DRAFTS}/{draft['id']}/check").get_json()["ok"]


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("<definitions", "not well-formed"),
        (TABLE.replace("<text>region</text>", "<text>region.__class__</text>"), "is refused"),
        (TABLE.replace('hitPolicy="UNIQUE"', 'hitPolicy="ANY"'), "hit policy ANY"),
    ],
    ids=["not-xml", "unsafe", "hit-policy"],
)
def test_a_bad_decision_file_is_a_422_naming_the_file_and_line_and_changes_nothing(app, api, world, content, where):
    draft = _draft(api, world)
    designer = api.as_(world["designer"])
    answer = designer.put(f"{DRAFTS}/{draft['id']}/decisions/site.dmn", data=content, headers=XML)
    assert answer.status_code == 422, answer.get_json()
    error = answer.get_json()["error"]
    assert "site.dmn" in error["message"] and where in error["message"]
    assert error["details"]["file"] == "site.dmn"
    assert isinstance(error["details"]["line"], int)
    assert designer.get(f"{DRAFTS}/{draft['id']}").get_json()["decisions"] == []
    assert _actions(app, draft["id"]) == ["draft.created", "draft.saved"]


def test_bad_requests_for_draft_files_are_clear(api, world):
    draft = _draft(api, world)
    designer = api.as_(world["designer"])
    base = f"{DRAFTS}/{draft['id']}"
    assert designer.put(f"{base}/decisions/site.dmn", json={"xml": TABLE}).status_code == 415
    assert designer.put(f"{base}/decisions/site.txt", data=TABLE, headers=XML).status_code == 422
    assert designer.put(f"{base}/decisions/site.dmn", data="  ", headers=XML).status_code == 422
    assert designer.put(f"{base}/forms/a.json", data="{}", headers=XML).status_code == 415
    huge = designer.put(f"{base}/decisions/site.dmn", data=TABLE + " " * (1024 * 1024), headers=XML)
    assert huge.status_code == 413, huge.get_json()
    error = huge.get_json()["error"]
    assert error["code"] == "too_large" and error["details"]["limit_bytes"] == 1024 * 1024
    assert "at most 1048576 bytes" in error["message"]
    assert designer.get(f"{base}/decisions").get_json()["items"] == []  # nothing was kept
    # One decision in two files is refused (the second upload of the same decision id).
    designer.put(f"{base}/decisions/site.dmn", data=TABLE, headers=XML)
    twice = designer.put(f"{base}/decisions/copy.dmn", data=TABLE, headers=XML)
    assert twice.status_code == 422 and "two files" in twice.get_json()["error"]["message"]
    assert designer.get(f"{base}/decisions/nothing.dmn").status_code == 404
    assert designer.put(f"{DRAFTS}/no-such/decisions/site.dmn", data=TABLE, headers=XML).status_code == 404


@pytest.mark.parametrize("who", ["coord", "qa", "auditor", "integrator"])
def test_only_designers_and_admins_touch_a_drafts_files(api, world, who):
    draft = _draft(api, world)
    client = api.as_(world[who])
    base = f"{DRAFTS}/{draft['id']}"
    assert client.get(f"{base}/decisions").status_code == 403
    assert client.put(f"{base}/decisions/site.dmn", data=TABLE, headers=XML).status_code == 403
    assert client.put(f"{base}/forms/a.schema.json", json={"type": "object"}).status_code == 403
    assert client.delete(f"{base}/forms/a.schema.json").status_code == 403
    assert api.as_(world["admin"]).put(f"{base}/decisions/site.dmn", data=TABLE, headers=XML).status_code == 200


def test_a_form_kept_with_the_draft_is_offered_checked_and_deployed(app, api, world):
    draft = _draft(api, world)
    designer = api.as_(world["designer"])
    base = f"{DRAFTS}/{draft['id']}"
    schema = {"type": "object", "properties": {"region": {"type": "string"}, "weight_kg": {"type": "number"}}}
    put = designer.put(f"{base}/forms/measure.schema.json", json=schema)
    assert put.status_code == 200 and put.get_json()["forms"] == ["measure.schema.json"]
    assert designer.get(f"{base}/forms").get_json()["items"] == [{"name": "measure.schema.json"}]
    assert designer.get(f"{base}/forms/measure.schema.json").get_json() == schema
    bad = designer.put(
        f"{base}/forms/bad.schema.json", data='{"type": \n "object",, }', content_type="application/json"
    )
    error = bad.get_json()["error"]
    assert bad.status_code == 422 and "bad.schema.json" in error["message"] and error["details"]["line"] == 2
    not_schema = designer.put(f"{base}/forms/bad.schema.json", json={"type": "nothing"})
    assert not_schema.status_code == 422 and "not a valid JSON Schema" in not_schema.get_json()["error"]["message"]
    assert designer.get(base).get_json()["forms"] == ["measure.schema.json"]
    # The task names it: the check passes with it (and the decision table), the deployed version keeps it.
    bpmn = DIAGRAM.replace(
        '<bpmn:userTask id="Task_Measure" name="Record region and weight">',
        '<bpmn:userTask id="Task_Measure" name="Record region and weight"><bpmn:extensionElements>'
        '<spiffworkflow:properties><spiffworkflow:property name="formJsonSchemaFilename" '
        'value="measure.schema.json"/></spiffworkflow:properties></bpmn:extensionElements>',
    )
    designer.put(base, json={"bpmn": bpmn})
    designer.put(f"{base}/decisions/site.dmn", data=TABLE, headers=XML)
    assert designer.post(f"{base}/check").get_json()["problems"] == []
    assert designer.post(f"{base}/deploy").status_code == 201
    therapy = start(api, world["coord"], "decision_therapy")
    tasks = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"]
    assert tasks[0]["form"]["schema"] == schema
    removed = designer.delete(f"{base}/forms/measure.schema.json")
    assert removed.status_code == 200 and removed.get_json()["forms"] == []
    assert "draft.form_saved" in _actions(app, draft["id"]) and "draft.form_deleted" in _actions(app, draft["id"])


def test_a_save_made_to_an_older_version_of_the_draft_is_refused_and_changes_nothing(app, api, world):
    draft = _draft(api, world)
    base = f"{DRAFTS}/{draft['id']}"
    opened = api.as_(world["designer"]).get(base)
    tag = opened.headers["ETag"]
    assert tag == f'"{opened.get_json()["etag"]}"'
    # The administrator saves first, from the same version.
    first = api.as_(world["admin"]).put(
        base, json={"bpmn": DIAGRAM.replace("Confirm the site", "Confirm")}, headers={"If-Match": tag}
    )
    assert first.status_code == 200 and first.headers["ETag"] != tag
    # The designer's save from the version they opened is refused, naming who changed it.
    late = api.as_(world["designer"]).put(base, json={"bpmn": DIAGRAM + " "}, headers={"If-Match": tag})
    assert late.status_code == 409
    error = late.get_json()["error"]
    assert error["code"] == "draft_changed" and error["details"]["updated_by"] == "admin"
    assert "changed by admin" in error["message"] and "reload" in error["message"]
    assert "Confirm the site" not in api.as_(world["designer"]).get(base).get_json()["bpmn"]
    # So are a decision table, a form and a removal made to that version; the etag in the body works as well.
    stale = {"If-Match": tag, **XML}
    assert api.as_(world["designer"]).put(f"{base}/decisions/site.dmn", data=TABLE, headers=stale).status_code == 409
    assert api.as_(world["designer"]).put(f"{base}/forms/a.json", json={}, headers={"If-Match": tag}).status_code == 409
    body = {"bpmn": DIAGRAM, "etag": tag.strip('"')}
    assert api.as_(world["designer"]).put(base, json=body).status_code == 409
    # With the current version (after a reload) it saves; without If-Match the last save wins, as before.
    current = api.as_(world["designer"]).get(base).headers["ETag"]
    assert (
        api.as_(world["designer"]).put(base, json={"bpmn": DIAGRAM}, headers={"If-Match": current}).status_code == 200
    )
    assert api.as_(world["designer"]).put(base, json={"bpmn": DIAGRAM}).status_code == 200
    assert _actions(app, draft["id"]).count("draft.saved") == 4  # the refusals are audited, not saved
    with app.app_context():
        refusals = db.session.execute(select(AuditEntry.action).where(AuditEntry.action.like("%refused%"))).all()
        assert refusals


def test_the_studio_page_keeps_decision_tables_and_forms_and_refuses_a_stale_save(app, api, world):
    from ..support.pages import csrf, signed_in

    draft = _draft(api, world)
    designer = signed_in(app, "designer")
    url = f"/studio/{draft['id']}"
    page = designer.get(url).get_data(as_text=True)
    assert f'data-etag="{draft["etag"]}"' in page and "dmn-modeler.production.min.js" in page
    assert '<script type="importmap">' in page and "studio-dmn.js" in page
    token = csrf(designer, url)
    headers = {"X-CSRFToken": token}
    put = designer.post(f"{url}/decisions/site.dmn", json={"xml": TABLE, "etag": draft["etag"]}, headers=headers)
    assert put.status_code == 200, put.get_json()
    body = put.get_json()
    assert body["decisions"] == [
        {
            "name": "site.dmn",
            "decision_id": "manufacturing_site",
            "decision_name": "Manufacturing site by region and weight",
        }
    ]
    assert body["etag"] != draft["etag"]
    assert designer.get(f"{url}/decisions/site.dmn").get_data(as_text=True) == TABLE
    assert designer.get(f"{url}/decisions/other.dmn").status_code == 404
    # The page's own older version is refused (409 naming who changed it), and nothing is saved.
    stale = designer.post(f"{url}/save", json={"bpmn": DIAGRAM + " ", "etag": draft["etag"]}, headers=headers)
    assert stale.status_code == 409 and stale.get_json()["error"]["details"]["updated_by"] == "designer"
    bad = designer.post(f"{url}/forms/bad.schema.json", json={"schema": "{\n,", "etag": body["etag"]}, headers=headers)
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["line"] == 2
    form = designer.post(
        f"{url}/forms/measure.schema.json", json={"schema": '{"type": "object"}', "etag": body["etag"]}, headers=headers
    )
    assert form.status_code == 200 and form.get_json()["forms"] == ["measure.schema.json"]
    saved = designer.post(f"{url}/save", json={"bpmn": DIAGRAM, "etag": form.get_json()["etag"]}, headers=headers)
    assert saved.status_code == 200 and saved.get_json()["etag"]
    assert "measure.schema.json" in designer.get(url).get_data(as_text=True)  # offered in the Form list
    assert designer.post(f"{url}/decisions/site.dmn", json={}, headers=headers).status_code == 422
    # Site staff never reach it.
    coordinator = signed_in(app, "coord")
    assert coordinator.get(f"{url}/decisions/site.dmn").status_code == 403


def test_of_concurrent_saves_made_to_one_version_exactly_one_is_made(app, api, world):
    from .test_compliance import in_threads

    draft = _draft(api, world)
    base = f"{DRAFTS}/{draft['id']}"
    tag = api.as_(world["designer"]).get(base).headers["ETag"]
    statuses: list[int] = []

    def save(n: int) -> None:
        body = {"bpmn": DIAGRAM.replace("Confirm the site", f"Confirm the site ({n})")}
        who = world["designer"] if n % 2 else world["admin"]
        statuses.append(api.as_(who).put(base, json=body, headers={"If-Match": tag}).status_code)

    assert in_threads(app, save, 4) == []
    assert sorted(statuses) == [200, 409, 409, 409]
    assert _actions(app, draft["id"]).count("draft.saved") == 2  # the fixture's and the one made
