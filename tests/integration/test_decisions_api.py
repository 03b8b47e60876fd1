"""DMN decisions through the API and the designer pages: a diagram uploaded with its decision table runs it, the
version page shows the table, a changed table is a new version, and what cannot run is refused with 422 and
changes nothing."""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from ..conftest import FIXTURES
from ..support.journeys import complete_only_task, only_task, start
from ..support.pages import signed_in
from .test_bad_input import counts, refused

DIAGRAM = (FIXTURES / "decision.bpmn").read_bytes()
TABLE = (FIXTURES / "manufacturing-site.dmn").read_bytes()


def _upload(api, token, diagram: bytes = DIAGRAM, decisions: dict[str, bytes] | None = None):
    files = [
        (io.BytesIO(content), name)
        for name, content in ({"site.dmn": TABLE} if decisions is None else decisions).items()
    ]
    data = {"bpmn": (io.BytesIO(diagram), "decision.bpmn"), "decisions": files}
    return api.as_(token).post("/api/v1/process-definitions", content_type="multipart/form-data", data=data)


def test_an_uploaded_decision_table_chooses_the_site(api, world):
    uploaded = _upload(api, world["designer"])
    assert uploaded.status_code == 201, uploaded.get_json()
    therapy = start(api, world["coord"], "decision_therapy")
    complete_only_task(api, world["coord"], therapy["id"], {"region": "UK", "weight_kg": 80})
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["manufacturing_site"] == "MFG-2" and detail["data"]["dose"] == {"band": "standard"}
    assert only_task(api, world["coord"], therapy["id"])["activity_id"] == "Task_Confirm"


def test_a_changed_table_is_a_new_version_and_the_same_one_is_not(api, world):
    first = _upload(api, world["designer"]).get_json()
    assert _upload(api, world["designer"]).status_code == 200
    changed = TABLE.replace(b'"MFG-2"', b'"MFG-3"')
    assert changed != TABLE
    second = _upload(api, world["designer"], decisions={"site.dmn": changed})
    assert second.status_code == 201 and second.get_json()["version"] == first["version"] + 1


def test_the_version_page_shows_the_decision_table(app, api, world):
    _upload(api, world["designer"])
    page = signed_in(app, "designer").get("/definitions/decision_therapy/versions/1")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-testid="decision-manufacturing_site"' in html
    assert 'called by <span class="mono">Rule_Site</span>' in html
    assert escape('in ("EU", "UK")', {'"': "&#34;"}) in html and "0 &lt; ? &lt;= 500" in html


def test_the_bundled_autologous_diagram_shows_its_infusion_window_table(app, world, bundled):
    version = bundled["autologous_car_t"]
    html = signed_in(app, "designer").get(f"/definitions/autologous_car_t/versions/{version}").get_data(as_text=True)
    assert 'data-testid="decision-infusion_window"' in html and "Rule_InfusionWindow" in html


def test_what_cannot_run_is_refused_and_deploys_nothing(app, api, world):
    before = counts(app)
    missing = refused(_upload(api, world["designer"], decisions={}), 422)
    assert missing["details"]["element_id"] == "Rule_Site" and "manufacturing_site" in missing["message"]
    unsafe = TABLE.replace(b"<text>region</text>", b"<text>region.__class__</text>")
    error = refused(_upload(api, world["designer"], decisions={"site.dmn": unsafe}), 422)
    assert error["code"] == "unsafe_expression" and "site.dmn" in error["message"]
    broken = refused(_upload(api, world["designer"], decisions={"site.dmn": b"<definitions"}), 422)
    assert "not well-formed" in broken["message"]
    assert counts(app) == before
