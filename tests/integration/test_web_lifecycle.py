"""A therapy's lifecycle on the web pages: the treatment centre holds a therapy and resumes it (its page, its
tasks and the control tower say it is held, since when and why), and a designer compares two versions of a
process and moves its running therapies from one to the other, after a dry run."""

from __future__ import annotations

import html
import re

import pytest

from ..support.journeys import ENROLMENT, only_task, start
from ..support.pages import csrf, signed_in
from .test_migration import deploy_version_two
from .test_web_network import _post, _row, _section, _text


def _plain(page) -> str:
    """A response's text, unescaped and with its whitespace runs made single spaces."""
    return re.sub(r"\s+", " ", html.unescape(page.get_data(as_text=True)))


def _words(text: str) -> str:
    """What a reader sees of a page's HTML: its tags dropped, its whitespace runs made single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text))


def _hold(client, therapy_id: str, **form) -> str:
    return _post(client, f"/therapies/{therapy_id}/hold", f"/therapies/{therapy_id}", **form)


def _resume(client, therapy_id: str, **form) -> str:
    return _post(client, f"/therapies/{therapy_id}/resume", f"/therapies/{therapy_id}", **form)


def test_a_held_therapy_says_since_when_and_why_refuses_its_tasks_and_resumes(app, api, world, clock):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    coordinator = signed_in(app, "coord")
    page = _text(coordinator, f"/therapies/{therapy['id']}")
    assert '<option value="PATIENT_UNWELL">' in _section(page, "hold-title")
    assert 'id="resume-title"' not in page

    held = _hold(coordinator, therapy["id"], reason_code="PATIENT_UNWELL", reason="Fever")
    assert "The therapy is on hold" in held
    assert re.search(r"On hold since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(PATIENT_UNWELL\), for 0 min\.", _words(held))
    assert 'id="hold-title"' not in held and 'id="resume-title"' in held
    assert "waits for the resume" in _section(held, "open-title")

    clock.advance(hours=3)
    page = html.unescape(_text(coordinator, f"/therapies/{therapy['id']}"))
    assert "(PATIENT_UNWELL), for 3 h." in page
    tower = _text(coordinator, "/dashboard")  # the default filter lists held therapies with the active ones
    assert re.search(r'class="badge badge-held"[^>]*>held 3 h<', _row(tower, therapy["id"]))
    assert '<option value="on_hold">on hold</option>' in tower
    assert therapy["id"] in _text(coordinator, "/dashboard/rows?status=on_hold")
    assert therapy["id"] not in _text(coordinator, "/dashboard/rows?status=completed")

    task_page = _plain(coordinator.get(f"/tasks/{task['id']}"))
    assert "this task waits for the resume" in task_page and "Complete task" not in task_page
    token = csrf(coordinator, f"/therapies/{therapy['id']}")
    refused = coordinator.post(
        f"/tasks/{task['id']}", data={"csrf_token": token, "data.eligible": "true", "data.patient_initials": "AB"}
    )
    assert refused.status_code == 409 and "on hold" in _plain(refused).lower()

    resumed = _resume(coordinator, therapy["id"], reason="Recovered")
    assert "The therapy is active again" in resumed and 'data-testid="held"' not in resumed
    timeline = re.sub(r"\s+", " ", _section(resumed, "timeline-title"))
    assert "Held (PATIENT_UNWELL: Fever)" in timeline
    assert "Resumed after 3.0 h on hold · reason: Recovered" in timeline
    assert "Complete task" in _text(coordinator, f"/tasks/{task['id']}")
    assert therapy["id"] not in _text(coordinator, "/dashboard/rows?status=on_hold")
    done = api.as_(world["coord"]).post(f"/api/v1/tasks/{task['id']}/complete", json={"data": ENROLMENT})
    assert done.status_code == 200, done.get_json()


def test_wrong_holds_and_resumes_are_refused_with_the_reason_on_the_page(app, api, world):
    therapy = start(api, world["coord"])
    coordinator = signed_in(app, "coord")
    assert "Not held: " in _hold(coordinator, therapy["id"], reason_code="")
    assert "Not resumed: The therapy is active, not on hold." in _resume(coordinator, therapy["id"])
    assert "Not held: " in _hold(coordinator, therapy["id"], reason_code="OTHER")  # OTHER needs a reason
    _hold(coordinator, therapy["id"], reason_code="OTHER", reason="Awaiting results")
    again = _hold(coordinator, therapy["id"], reason_code="PATIENT_UNWELL")
    assert "Not held: The therapy has been held since" in again
    # Manufacturing sees the therapy but not the forms, and may not hold or resume it.
    manufacturing = signed_in(app, "mfg")
    page = _text(manufacturing, f"/therapies/{therapy['id']}")
    assert 'data-testid="held"' in page and 'id="resume-title"' not in page
    token = csrf(manufacturing, f"/therapies/{therapy['id']}")
    assert manufacturing.post(f"/therapies/{therapy['id']}/resume", data={"csrf_token": token}).status_code == 403
    # Another centre's coordinator does not see it at all.
    other = signed_in(app, "coordb")
    token = csrf(other, "/dashboard")
    assert other.post(f"/therapies/{therapy['id']}/resume", data={"csrf_token": token}).status_code == 404
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["status"] == "on_hold"


def _migrate(client, **form) -> object:
    path = "/definitions/mini_therapy/migrate"
    return client.post(path, data={"from": "1", "to": "2", **form, "csrf_token": csrf(client, path)})


def _results(page) -> dict[str, str]:
    """Each therapy's result row of the migration page, by therapy id, as plain text."""
    table = _section(_plain(page), "results-title")
    return {
        m.group(1): re.sub(r"<[^>]+>", "", m.group(2)).strip()
        for m in re.finditer(r'<tr data-therapy-id="([^"]+)"[^>]*>(.*?)</tr>', table)
    }


def test_a_designer_compares_two_versions_dry_runs_and_migrates(app, api, world):
    therapy = start(api, world["coord"])
    deploy_version_two(app)
    designer = signed_in(app, "designer")
    listing = _text(designer, "/definitions/mini_therapy")
    assert "/definitions/mini_therapy/migrate?from=1&amp;to=2" in listing and "Compare with v1 and migrate" in listing
    page = _text(designer, "/definitions/mini_therapy/migrate?from=1&to=2")
    assert re.findall(r"<li><code>(\w+)", _section(page, "diff-title").split('data-testid="diff-added"')[1])[:1] == [
        "Task_Enrolment"
    ]
    removed = page.split('data-testid="diff-removed"')[1].split("</ul>")[0]
    assert "Task_Enrol" in removed and "Task_Enrolment" not in removed
    assert 'name="map.Task_Enrol"' in page and '<option value="Task_Enrolment">' in page
    assert "1 therapy runs (or wait on hold) on v1" in html.unescape(page)

    unmapped = _migrate(designer, action="dry_run")
    assert unmapped.status_code == 200
    [(therapy_id, text)] = _results(unmapped).items()
    assert therapy_id == therapy["id"] and "cannot move" in text and "open activity 'Task_Enrol'" in text
    mapped = _migrate(designer, action="dry_run", **{"map.Task_Enrol": "Task_Enrolment", "map.Timer_Wait": ""})
    assert "can move" in _results(mapped)[therapy["id"]] and "Dry run" in _plain(mapped)
    assert '<option value="Task_Enrolment" selected>' in mapped.get_data(as_text=True)  # the map is kept
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["process"]["version"] == 1

    moved = _migrate(designer, action="migrate", **{"map.Task_Enrol": "Task_Enrolment"})
    assert re.search(r"v2\s*moved", _results(moved)[therapy["id"]])
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["process"]["version"] == 2 and detail["open_tasks"][0]["activity_id"] == "Task_Enrolment"
    assert "Moved from version 1 to 2" in _text(signed_in(app, "coord"), f"/therapies/{therapy['id']}")


@pytest.mark.parametrize(
    ("who", "form", "status", "shown"),
    [
        ("designer", {"to": "1"}, 422, "Choose another version to move to."),
        ("designer", {"to": "7"}, 422, "Process 'mini_therapy' has no version 7."),
        ("designer", {"map.Task_Enrol": "Task_Nowhere"}, 422, "Version 2 has no activity 'Task_Nowhere'."),
    ],
)
def test_a_wrong_migration_is_refused_on_the_page_and_moves_nothing(app, api, world, who, form, status, shown):
    therapy = start(api, world["coord"])
    deploy_version_two(app)
    refused = _migrate(signed_in(app, who), action="migrate", **form)
    assert refused.status_code == status and shown in _plain(refused)
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["process"]["version"] == 1


def test_only_designers_and_administrators_open_the_migration_page(app, world):
    deploy_version_two(app)
    assert signed_in(app, "coord").get("/definitions/mini_therapy/migrate").status_code == 403
    assert "Compare with v1" not in _text(signed_in(app, "coord"), "/definitions/mini_therapy")
    assert signed_in(app, "admin").get("/definitions/mini_therapy/migrate").status_code == 200
    same = signed_in(app, "designer").get("/definitions/mini_therapy/migrate?from=2&to=2")
    assert same.status_code == 422 and "Choose two different versions to compare." in _plain(same)


def test_the_timeline_names_each_step_in_words(app, api, world):
    from server.web.therapy_pages import ACTION_LABELS, TIMELINE_ACTIONS

    assert TIMELINE_ACTIONS <= set(ACTION_LABELS), "every step the timeline shows has a name"
    therapy = start(api, world["coord"])
    page = _text(signed_in(app, "coord"), f"/therapies/{therapy['id']}")
    labels = re.findall(r'<span class="tl-action" title="([^"]+)">([^<]+)</span>', _section(page, "timeline-title"))
    assert ("therapy.started", "Started") in labels and ("task.ready", "Task ready") in labels
    assert all(code != label for code, label in labels)
