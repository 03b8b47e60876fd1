"""Bad input never answers 500: each is a 4xx with the error body, changes nothing, and stores no NaN.

Every test runs on SQLite and (with TETHER_TEST_POSTGRES_URL) on PostgreSQL, which refuses NUL characters,
lone surrogates and NaN in its own way: the API must refuse them first, the same way on both.
"""

from __future__ import annotations

import io
import json

import pytest
import sqlalchemy as sa

from ..conftest import FIXTURES

START = {"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-1"}}
BIG = 2**63  # one past the largest 64-bit integer


def counts(app) -> dict[str, int]:
    """Rows in every table: a refused request must leave all of them as they were."""
    from server.store.extensions import db

    with app.app_context():
        return {
            table.name: db.session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in db.metadata.sorted_tables
        }


def refused(answer, *statuses: int) -> dict:
    """Assert ``answer`` is one of ``statuses`` with the API's error body; its ``error`` object."""
    assert answer.status_code in statuses, (answer.status_code, answer.get_data(as_text=True)[:500])
    body = json.loads(answer.get_data(as_text=True), parse_constant=_no_constants)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def _no_constants(name: str):
    raise AssertionError(f"the answer is not strict JSON: it holds {name}")


def post_raw(api, path: str, text: str, token: str | None):
    """POST ``text`` as a JSON body, exactly as written (NaN, lone surrogates and all)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.client.post(
        path, data=text.encode("utf-8", "surrogatepass"), content_type="application/json", headers=headers
    )


def start_body(**changes) -> str:
    """A therapy start body with ``changes`` spliced in as raw JSON text (``key=text``)."""
    parts = [f'"{key}": {json.dumps(value)}' for key, value in START.items() if key not in changes]
    parts += [f'"{key}": {text}' for key, text in changes.items()]
    return "{" + ", ".join(parts) + "}"


@pytest.mark.parametrize("depth", [70, 2000, 100_000])
def test_deeply_nested_json_is_refused_by_field(app, api, world, depth):
    before = counts(app)
    deep = "[" * depth + "]" * depth
    error = refused(post_raw(api, "/api/v1/therapies", start_body(data=f'{{"x": {deep}}}'), world["coord"]), 400, 422)
    assert error["details"]["reason"] == "too_deep" and error["details"]["field"].startswith("body")
    message = json.dumps({"name": "shipment.delivered", "therapy_id": "x"})[:-1] + f', "payload": {deep}}}'
    error = refused(post_raw(api, "/api/v1/messages", message, world["integrator"]), 400, 422)
    assert error["details"]["reason"] == "too_deep"
    assert counts(app) == before


def test_integers_beyond_64_bits_in_bodies_paths_and_query_strings(app, api, world):
    before = counts(app)
    error = refused(post_raw(api, "/api/v1/therapies", start_body(version=str(BIG)), world["coord"]), 422)
    assert error["details"] == {"field": "body.version", "reason": "integer_out_of_range"}
    error = refused(post_raw(api, "/api/v1/therapies", start_body(data=f'{{"dose": {-BIG - 1}}}'), world["coord"]), 422)
    assert error["details"] == {"field": "body.data.dose", "reason": "integer_out_of_range"}
    admin, auditor = api.as_(world["admin"]), api.as_(world["auditor"])
    for path in (
        "/api/v1/users/99999999999999999999",
        f"/api/v1/users/{BIG}",
        "/api/v1/users/" + "9" * 5000,
        "/api/v1/process-definitions/mini_therapy/versions/99999999999999999999/bpmn",
    ):
        refused(admin.get(path), 404)
    for path in (f"/api/v1/tokens/{BIG}/revoke", f"/api/v1/tokens/{BIG}/expire", f"/api/v1/users/{BIG}/unlock"):
        refused(admin.post(path, json={}), 404)
    for user_id in (str(BIG), "99999999999999999999", "\u0663"):  # the last: ARABIC-INDIC DIGIT THREE
        refused(
            admin.client.patch(
                f"/api/v1/users/{user_id}",
                json={"display_name": "X"},
                headers={"Authorization": f"Bearer {world['admin']}"},
            ),
            404,
        )
    for after in (str(BIG), "99999999999999999999", str(-BIG - 1), "9" * 5000):
        error = refused(auditor.get(f"/api/v1/audit?after_seq={after}"), 422)
        assert error["details"] == {"field": "after_seq", "reason": "integer_out_of_range"}
    for after in ("soon", "%2B-5", "1.5", "\u0663"):
        assert refused(auditor.get(f"/api/v1/audit?after_seq={after}"), 400)["details"]["field"] == "after_seq"
    assert auditor.get(f"/api/v1/audit?after_seq={BIG - 1}").get_json()["items"] == []
    refused(admin.get(f"/api/v1/tokens?user_id={BIG}"), 422)
    # Ids and versions are 32-bit columns: PostgreSQL cannot even compare one with 2^31.
    error = refused(post_raw(api, "/api/v1/therapies", start_body(version=str(2**31)), world["coord"]), 422)
    assert "version" in error["details"]["fields"]
    for path in (f"/api/v1/users/{2**31}", f"/api/v1/process-definitions/mini_therapy/versions/{2**31}/bpmn"):
        refused(admin.get(path), 404)
    refused(admin.get(f"/api/v1/tokens?user_id={2**31}"), 422)
    for body in ({"user_id": 2**31}, {"ttl_days": 10**12}):
        assert refused(admin.post("/api/v1/tokens", json=body), 422)["code"] == "invalid_request"
    refused(admin.post("/api/v1/tokens/1/expire", json={"reason": "\x00"}), 422)
    refused(admin.get("/api/v1/users?limit=99999999999999999999"), 400)
    assert counts(app) == before


def test_cursors_that_this_server_did_not_hand_out_are_refused(app, api, world):
    import base64

    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    coord = api.as_(world["coord"])
    for text in (f'{{"o": {BIG}}}', '{"o": -5}', '{"o": 1e400}', '{"o": true}', "[" * 5000 + "]" * 5000):
        error = refused(coord.get(f"/api/v1/therapies?cursor={cursor(text)}"), 400)
        assert error["code"] == "invalid_cursor"


@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\u0000b"', '"\\udfff tail"'])
def test_lone_surrogates_and_nul_characters_are_refused_everywhere_they_would_be_stored(app, api, world, text):
    before = counts(app)
    coord = world["coord"]
    cases = [
        ("/api/v1/therapies", start_body(patient=f'{{"reference": {text}}}'), coord, "body.patient.reference"),
        ("/api/v1/therapies", start_body(data=f'{{"note": {text}}}'), coord, "body.data.note"),
        ("/api/v1/therapies", start_body(data=f"{{{text}: 1}}"), coord, "body.data."),
        ("/api/v1/auth/token", f'{{"username": {text}, "password": "x"}}', None, "body.username"),
        (
            "/api/v1/messages",
            f'{{"name": "shipment.delivered", "therapy_id": {text}}}',
            world["integrator"],
            "body.therapy_id",
        ),
        (
            "/api/v1/webhooks",
            f'{{"url": "https://mes.example/h", "events": [{text}]}}',
            world["integrator"],
            "body.events[0]",
        ),
    ]
    for path, body, token, field in cases:
        error = refused(post_raw(api, path, body, token), 422)
        assert error["details"]["field"].startswith(field), (path, error)
        assert error["details"]["reason"] in ("invalid_unicode", "nul_character")
    assert counts(app) == before


def test_nul_characters_in_paths_are_unknown_resources_and_in_query_strings_invalid(app, api, world):
    coord = api.as_(world["coord"])
    for path in (
        "/api/v1/therapies/%00",
        "/api/v1/therapies/a%00b/timeline",
        "/api/v1/tasks/%00",
        "/api/v1/process-definitions/%00",
        "/api/v1/alerts/x%00",
        "/api/v1/webhooks/%00/deliveries",
    ):
        refused(coord.get(path), 404)
    refused(coord.post("/api/v1/therapies/%00/cancel", json={"reason": "r"}), 404)
    for query in ("status=%00", "site=A%00", "process_key=%00", "%00=1"):
        error = refused(coord.get(f"/api/v1/therapies?{query}"), 422)
        assert error["details"]["reason"] == "nul_character"
    refused(coord.get("/api/v1/tasks?therapy_id=%00"), 422)
    refused(api.as_(world["auditor"]).get("/api/v1/audit?therapy_id=%00"), 422)
    assert coord.client.get("/assets/%00").status_code == 404


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_nan_and_infinity_never_enter_storage(app, api, world, number):
    before = counts(app)
    error = refused(post_raw(api, "/api/v1/therapies", start_body(data=f'{{"t": [1, {number}]}}'), world["coord"]), 422)
    assert error["details"] == {"field": "body.data.t[1]", "reason": "not_finite"}
    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=START).get_json()
    message = f'{{"name": "shipment.delivered", "therapy_id": "{therapy["id"]}", "payload": {{"t": {number}}}}}'
    assert (
        refused(post_raw(api, "/api/v1/messages", message, world["integrator"]), 422)["details"]["field"]
        == "body.payload.t"
    )
    assert counts(app)["therapy"] == before["therapy"] + 1
    audit = api.as_(world["auditor"]).get("/api/v1/audit?limit=500")
    assert audit.status_code == 200
    json.loads(audit.get_data(as_text=True), parse_constant=_no_constants)  # what a JavaScript client reads


def test_every_json_answer_is_strict(app):
    with app.app_context():
        with pytest.raises(ValueError):
            app.json.dumps({"t": float("nan")})
        from server.store.extensions import compact_json

        with pytest.raises(ValueError):
            compact_json({"t": float("inf")})


def _mini(name: str) -> str:
    return (FIXTURES / "mini.bpmn").read_text(encoding="utf-8").replace("Mini therapy", name)


def _upload(content: bytes, extra_forms: tuple = ()) -> dict:
    """The multipart fields of an upload of ``content`` with the fixture forms (and ``extra_forms``)."""
    forms = [(io.BytesIO(path.read_bytes()), path.name) for path in sorted(FIXTURES.glob("*.json"))]
    return {"bpmn": (io.BytesIO(content), "mini.bpmn"), "forms": forms + list(extra_forms)}


@pytest.mark.parametrize("encoding", ["UTF-16", "UTF-16-LE", "ISO-8859-1", "UTF-8-SIG"])
def test_bpmn_saved_in_another_encoding_is_stored_as_utf8(api, world, encoding):
    name = f"Thérapie {encoding} – ü"
    text = _mini(name).replace('encoding="UTF-8"', f'encoding="{encoding.removesuffix("-SIG")}"')
    content = text.encode(encoding.lower(), errors="replace" if encoding == "ISO-8859-1" else "strict")
    designer = api.as_(world["designer"])
    upload = designer.post("/api/v1/process-definitions", content_type="multipart/form-data", data=_upload(content))
    assert upload.status_code == 201, upload.get_json()
    stored = designer.get(f"/api/v1/process-definitions/mini_therapy/versions/{upload.get_json()['version']}/bpmn")
    assert stored.status_code == 200
    xml = stored.get_data().decode("utf-8")
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    expected = name if encoding != "ISO-8859-1" else name.replace("–", "?")
    assert upload.get_json()["name"] == expected and expected in xml
    again = designer.post("/api/v1/process-definitions", content_type="multipart/form-data", data=_upload(content))
    assert again.status_code == 200 and again.get_json()["id"] == upload.get_json()["id"]


@pytest.mark.parametrize(
    "content",
    [
        _mini("Thérapie").encode("latin-1"),  # declared UTF-8, written in Latin-1
        _mini("Mini").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-8"),  # declared UTF-16, is not
        _mini("Mini").replace('encoding="UTF-8"', 'encoding="no-such-charset"').encode("utf-8"),
        _mini("Mini").replace('encoding="UTF-8"', 'encoding="base64"').encode("utf-8"),
    ],
)
def test_bpmn_that_is_not_text_in_its_encoding_is_refused_asking_for_utf8(app, api, world, content):
    before = counts(app)
    error = refused(
        api.as_(world["designer"]).post(
            "/api/v1/process-definitions", content_type="multipart/form-data", data=_upload(content)
        ),
        422,
    )
    assert "UTF-8" in error["message"]
    assert counts(app) == before


@pytest.mark.parametrize(
    "form",
    [
        b'{"type": "object", "default": NaN}',
        b'{"title": "a\\u0000b"}',
        b'{"title": "\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_uploaded_forms_that_could_not_be_stored_are_refused(app, api, world, form):
    before = counts(app)
    content = (FIXTURES / "mini.bpmn").read_bytes().replace(b"Mini therapy", b"Mini with forms")
    refused(
        api.as_(world["designer"]).post(
            "/api/v1/process-definitions",
            content_type="multipart/form-data",
            data=_upload(content, [(io.BytesIO(form), "extra.schema.json")]),
        ),
        422,
    )
    assert counts(app) == before


def test_condition_series_filters_at_the_edges_of_time_and_of_integers(app, api, world):
    import base64

    logistics = api.as_(world["logistics"])
    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=START).get_json()
    series = f"/api/v1/therapies/{therapy['id']}/conditions"
    for query in (
        "from=0001-01-01T00:00:00%2B01:00",
        "to=9999-12-31T23:59:59-05:00",
        "from=0001-01-01T00:00:00%2B01:00&points=3",
        "limit=" + "9" * 5000,
    ):
        assert refused(logistics.get(f"{series}?{query}"), 400)["details"]["field"] in ("from", "to", "limit")
    assert logistics.get(f"{series}?from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z&points=7").status_code == 200
    for text in (
        '{"t": "2026-01-01T00:00:00", "i": 99999999999999999999999}',
        '{"t": "2026-01-01", "i": -1}',
        '{"t": "0001-01-01T00:00:00+05:00", "i": 1}',
        "[" * 2000 + "]" * 2000,
    ):
        cursor = base64.urlsafe_b64encode(text.encode()).decode()
        assert refused(logistics.get(f"{series}?cursor={cursor}"), 400)["code"] == "invalid_cursor"


def test_web_form_posts_with_a_nul_character_are_refused_before_they_reach_the_database(app, api, world):
    import re

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    before = counts(app)
    answer = client.post("/login", data={"username": "coord\x00", "password": "x", "csrf_token": csrf})
    assert answer.status_code == 422 and answer.mimetype == "text/html"  # the web pages' own error page
    assert "The form field &#39;username&#39; contains a NUL character" in answer.get_data(as_text=True)
    assert counts(app) == before  # not even a failed login was recorded


def test_every_refusal_and_success_seen_here_is_documented_with_its_schema(app, api, world):
    from openapi_core import OpenAPI
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
    from werkzeug.test import EnvironBuilder

    openapi = OpenAPI.from_dict(api.get("/api/v1/openapi.json").get_json())
    admin, coord = api.as_(world["admin"]), api.as_(world["coord"])
    answers = [
        (admin.post("/api/v1/tokens", json={"label": "ci"}), 201),  # documented as 200 before
        (admin.post("/api/v1/tokens", json={"ttl_days": 10**12}), 422),
        (admin.get(f"/api/v1/tokens?user_id={BIG}"), 422),
        (admin.get("/api/v1/users/2147483648"), 404),
        (post_raw(api, "/api/v1/therapies", start_body(data='{"t": NaN}'), world["coord"]), 422),
        (post_raw(api, "/api/v1/therapies", "{", world["coord"]), 400),
        (coord.post("/api/v1/therapies", data="x", content_type="text/plain"), 415),
        (coord.get("/api/v1/therapies?site=%00"), 422),
        (coord.get("/api/v1/therapies?limit=0"), 400),
        (api.get("/api/v1/therapies"), 401),
        (coord.get("/api/v1/audit/verify"), 403),
        (post_raw(api, "/api/v1/auth/token", '{"username": "\\ud800", "password": "x"}', None), 422),
        (api.post("/api/v1/auth/token", json={"username": "coord", "password": "wrong"}), 401),
        (api.as_(world["integrator"]).post("/api/v1/messages", json={"name": "x", "therapy_id": "none"}), 404),
    ]
    for answer, status in answers:
        assert answer.status_code == status, (answer.request.path, answer.get_json())
        sent = answer.request
        request = WerkzeugOpenAPIRequest(
            EnvironBuilder(path=sent.path, method=sent.method, query_string=sent.query_string.decode()).get_request()
        )
        openapi.validate_response(request, WerkzeugOpenAPIResponse(answer))  # status, media type and body


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_timestamps_that_leave_the_calendar_in_utc_are_refused(app, api, world, moment):
    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=START).get_json()
    before = counts(app)
    reading = {"sensor_id": "S1", "temperature_c": 4.0, "recorded_at": moment}
    error = refused(
        api.as_(world["logistics"]).post(f"/api/v1/therapies/{therapy['id']}/conditions", json=reading), 422
    )
    assert "recorded_at" in error["details"]["fields"]
    handoff = {
        "material_id": "M1",
        "from_party": "a",
        "to_party": "b",
        "scanned_coi": therapy["coi"],
        "occurred_at": moment,
    }
    error = refused(api.as_(world["logistics"]).post(f"/api/v1/therapies/{therapy['id']}/custody", json=handoff), 422)
    assert "occurred_at" in error["details"]["fields"]
    error = refused(api.as_(world["admin"]).post("/api/v1/tokens/1/expire", json={"at": moment}), 422)
    assert "at" in error["details"]["fields"]
    assert counts(app) == before
