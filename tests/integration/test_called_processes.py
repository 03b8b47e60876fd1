"""Call activities that call another deployed definition, through the API and the pages: the caller binds the
called version current at its deployment (or the one it names), runs its tasks as its own, keeps running on that
version when a new one is deployed, moves onto a caller version that binds a newer one, and what cannot run is
refused with 422 and deploys nothing."""

from __future__ import annotations

import io

from ..conftest import FIXTURES
from ..support.journeys import ENROLMENT, complete_only_task, only_task, therapy_request
from ..support.pages import signed_in
from .test_bad_input import counts, refused
from .test_record import pdf_words

CALLER = (FIXTURES / "caller.bpmn").read_bytes()
CALLED = (FIXTURES / "called-release.bpmn").read_bytes()
RELEASE_FORM = {"called-release.schema.json": (FIXTURES / "called-release.schema.json").read_bytes()}
ENROL_FORM = {"mini-enrol.schema.json": (FIXTURES / "mini-enrol.schema.json").read_bytes()}
CALL_LINE = 27


def upload(api, token, diagram: bytes, forms: dict[str, bytes] | None = None):
    files = [(io.BytesIO(content), name) for name, content in (forms or {}).items()]
    data = {"bpmn": (io.BytesIO(diagram), "diagram.bpmn"), "forms": files}
    return api.as_(token).post("/api/v1/process-definitions", content_type="multipart/form-data", data=data)


def deployed(api, token, diagram: bytes, forms: dict[str, bytes] | None = None, status: int = 201) -> dict:
    answer = upload(api, token, diagram, forms)
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def renamed_release() -> bytes:
    return CALLED.replace(b'name="Release the batch"', b'name="Release the batch, second look"')


def with_called_version(value: str) -> bytes:
    return CALLER.replace(
        b'calledElement="called_release">',
        b'calledElement="called_release"><bpmn:extensionElements><spiffworkflow:properties>'
        b'<spiffworkflow:property name="calledVersion" value="' + value.encode() + b'"/>'
        b"</spiffworkflow:properties></bpmn:extensionElements>",
    )


def start_caller(api, world, reference: str = "PT-1") -> dict:
    """A therapy of the caller, made at MFG-1 (the called process's QA task is the manufacturing party's)."""
    body = {**therapy_request("caller_therapy", reference=reference), "parties": {"manufacturing": "MFG-1"}}
    created = api.as_(world["coord"]).post("/api/v1/therapies", json=body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def into_release(api, world) -> tuple[dict, dict]:
    """A therapy of the caller, enrolled: it waits at the called process's QA task."""
    therapy = start_caller(api, world)
    complete_only_task(api, world["coord"], therapy["id"], ENROLMENT)
    return therapy, only_task(api, world["qa"], therapy["id"])


def test_a_caller_runs_the_called_process_of_the_version_it_bound(app, api, world):
    called = deployed(api, world["designer"], CALLED, RELEASE_FORM)
    assert called["calls"] == []
    # The called process's form came with its own version: the caller's upload does not carry it.
    caller = deployed(api, world["designer"], CALLER, ENROL_FORM)
    binding = {"activity_id": "Call_Release", "key": "called_release", "version": 1}
    assert caller["calls"] == [binding]
    versions = api.as_(world["coord"]).get("/api/v1/process-definitions/caller_therapy").get_json()["versions"]
    assert versions[0]["calls"] == [binding]

    therapy, task = into_release(api, world)
    assert (task["activity_id"], task["name"], task["role"]) == ("Task_Release", "Release the batch", "qa")
    assert task["form"]["schema"]["properties"]["released"]["type"] == "boolean" and task["party"] == "manufacturing"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["phase"] == "release"
    bad = api.as_(world["qa"]).post(f"/api/v1/tasks/{task['id']}/complete", json={"data": {"released": "yes"}})
    assert refused(bad, 422)
    complete_only_task(api, world["qa"], therapy["id"], {"released": True})
    assert only_task(api, world["coord"], therapy["id"])["activity_id"] == "Task_Infuse"
    complete_only_task(api, world["coord"], therapy["id"], {})
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "completed" and detail["data"]["released"] is True
    record = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_json()
    assert record["therapy"]["process"]["calls"] == [binding]
    pdf = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.pdf").get_data()
    assert "Calls called_release v1 (Call_Release)" in pdf_words(pdf)
    # The called process's steps are the therapy's: in its timeline, its record and its page.
    timeline = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/timeline").get_data(as_text=True)
    assert "Task_Release" in timeline and "Release the batch" in timeline
    record = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}/record.json").get_data(as_text=True)
    assert "Release the batch" in record
    page = signed_in(app, "coord").get(f"/therapies/{therapy['id']}").get_data(as_text=True)
    assert "Release the batch" in page


def test_a_new_called_version_changes_no_running_caller_until_the_caller_is_deployed_again(api, world):
    deployed(api, world["designer"], CALLED, RELEASE_FORM)
    deployed(api, world["designer"], CALLER, ENROL_FORM)
    therapy, task = into_release(api, world)
    assert deployed(api, world["designer"], CALLER, ENROL_FORM, status=200)["version"] == 1, "the same upload"

    assert deployed(api, world["designer"], renamed_release(), RELEASE_FORM)["version"] == 2
    assert only_task(api, world["qa"], therapy["id"])["name"] == "Release the batch"
    later = start_caller(api, world, "PT-2")
    complete_only_task(api, world["coord"], later["id"], ENROLMENT)
    assert only_task(api, world["qa"], later["id"])["name"] == "Release the batch", "caller version 1 binds 1"

    # The same caller deployed again binds the called version current now, as a new version of its own.
    again = deployed(api, world["designer"], CALLER, ENROL_FORM)
    assert again["version"] == 2 and again["calls"][0]["version"] == 2
    fixed = deployed(api, world["designer"], with_called_version("1"), ENROL_FORM)
    assert fixed["version"] == 3 and fixed["calls"][0]["version"] == 1

    complete_only_task(api, world["qa"], therapy["id"], {"released": True})
    complete_only_task(api, world["coord"], therapy["id"], {})
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["status"] == "completed"


def test_a_therapy_inside_the_called_process_migrates_onto_the_newer_binding(app, api, world):
    deployed(api, world["designer"], CALLED, RELEASE_FORM)
    deployed(api, world["designer"], CALLER, ENROL_FORM)
    therapy, task = into_release(api, world)
    deployed(api, world["designer"], renamed_release(), RELEASE_FORM)
    deployed(api, world["designer"], CALLER, ENROL_FORM)

    diff = api.as_(world["designer"]).get("/api/v1/process-definitions/caller_therapy/diff?from=1&to=2").get_json()
    change = {"activity_id": "Call_Release", "from": {"key": "called_release", "version": 1}}
    assert diff["calls"] == [{**change, "to": {"key": "called_release", "version": 2}}]
    assert diff["added"] == diff["removed"] == [], "the caller's own diagram is the same"
    page = signed_in(app, "designer").get("/definitions/caller_therapy/migrate?from=1&to=2").get_data(as_text=True)
    assert 'data-testid="diff-calls"' in page and "version 2</li>" in page.replace("\n", "")
    moved = api.as_(world["designer"]).post(
        "/api/v1/process-definitions/caller_therapy/migrations", json={"from_version": 1, "to_version": 2}
    )
    assert moved.status_code == 200 and moved.get_json()["results"] == [{"therapy_id": therapy["id"], "ok": True}]
    now = only_task(api, world["qa"], therapy["id"])
    assert (now["id"], now["name"]) == (task["id"], "Release the batch, second look")
    complete_only_task(api, world["qa"], therapy["id"], {"released": True})
    complete_only_task(api, world["coord"], therapy["id"], {})
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["status"] == "completed"


def test_what_cannot_be_called_is_refused_and_deploys_nothing(app, api, world):
    before = counts(app)
    missing = refused(upload(api, world["designer"], CALLER, ENROL_FORM), 422)
    assert (missing["details"]["element_id"], missing["details"]["line"]) == ("Call_Release", CALL_LINE)
    assert "Deploy the definition 'called_release' first" in missing["message"]
    latest = refused(upload(api, world["designer"], with_called_version("latest"), ENROL_FORM), 422)
    assert latest["details"]["element_id"] == "Call_Release" and "not supported" in latest["message"]
    assert counts(app) == before

    deployed(api, world["designer"], CALLED, RELEASE_FORM)
    before = counts(app)
    absent = refused(upload(api, world["designer"], with_called_version("4"), ENROL_FORM), 422)
    assert absent["details"]["line"] == CALL_LINE and "deployed versions: 1" in absent["message"]
    # caller_therapy version 1 calls called_release; a called_release that calls caller_therapy back is a cycle.
    deployed(api, world["designer"], CALLER, ENROL_FORM)
    before = counts(app)
    calls_back = CALLED.replace(
        b'<bpmn:endEvent id="End_Released" name="Released">',
        b'<bpmn:callActivity id="Call_Back" calledElement="caller_therapy"/><bpmn:endEvent id="End_Released">',
    )
    cycle = refused(upload(api, world["designer"], calls_back, RELEASE_FORM), 422)
    assert cycle["details"]["element_id"] == "Call_Back" and "cycle" in cycle["message"]
    assert "calls 'called_release' back (through its call activity Call_Release)" in cycle["message"]
    assert counts(app) == before


def test_the_version_page_says_which_version_it_calls(app, api, world):
    deployed(api, world["designer"], CALLED, RELEASE_FORM)
    deployed(api, world["designer"], CALLER, ENROL_FORM)
    html = signed_in(app, "designer").get("/definitions/caller_therapy/versions/1").get_data(as_text=True)
    assert 'data-testid="version-calls"' in html and "Call_Release" in html
    assert '<a href="/definitions/called_release/versions/1">' in html
    plain = signed_in(app, "designer").get("/definitions/called_release/versions/1").get_data(as_text=True)
    assert "This version calls no other deployed process." in plain


def test_bundled_diagrams_deploy_a_called_process_before_its_callers(app, world, tmp_path):
    from server.workflow.definitions import deploy_bundled

    def formless(diagram: bytes) -> bytes:
        lines = [line for line in diagram.splitlines(keepends=True) if b"formJsonSchemaFilename" not in line]
        return b"".join(lines)

    # By name the caller comes first; it is deployed after the process it calls all the same.
    (tmp_path / "a-caller.bpmn").write_bytes(formless(CALLER))
    (tmp_path / "b-called.bpmn").write_bytes(formless(CALLED))
    with app.app_context():
        results = deploy_bundled(tmp_path)
        assert [(row.key, created) for row, created in results] == [("called_release", True), ("caller_therapy", True)]
        assert results[1][0].info["called"] == {"Call_Release": {"key": "called_release", "version": 1}}


def test_a_called_process_brings_its_decision_tables(app, api, world):
    from .test_decisions_api import _upload as upload_decision_diagram

    assert upload_decision_diagram(api, world["designer"]).status_code == 201
    caller = deployed(
        api,
        world["designer"],
        CALLER.replace(b'calledElement="called_release"', b'calledElement="decision_therapy"'),
        ENROL_FORM,
    )
    assert caller["calls"] == [{"activity_id": "Call_Release", "key": "decision_therapy", "version": 1}]
    html = signed_in(app, "designer").get("/definitions/caller_therapy/versions/1").get_data(as_text=True)
    assert 'data-testid="decision-manufacturing_site"' in html and "Rule_Site" in html

    therapy = start_caller(api, world)
    complete_only_task(api, world["coord"], therapy["id"], ENROLMENT)
    complete_only_task(api, world["coord"], therapy["id"], {"region": "UK", "weight_kg": 80})
    assert only_task(api, world["coord"], therapy["id"])["activity_id"] == "Task_Confirm"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["manufacturing_site"] == "MFG-2"
