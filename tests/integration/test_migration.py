"""Moving running therapies to a new version of their process: a dry run first, renamed activities mapped,
each therapy in its own transaction, and those that cannot move left as they were."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server.store.extensions import db
from server.store.models import AuditEntry, OutboxEvent

from ..conftest import ROOT
from ..support.journeys import ENROLMENT, complete, fire, only_task, start
from .test_compliance import at_receipt, sign

MINI = (ROOT / "tests" / "fixtures" / "mini.bpmn").read_text()
RENAMES = {"Task_Enrol": "Task_Enrolment", "Timer_Wait": "Timer_Rest"}


def deploy_version_two(app) -> None:
    """Deploy version 2 of the mini therapy (enrolment and the closing wait renamed), after the therapies of
    version 1 have started."""
    from server.workflow.definitions import deploy

    text = MINI
    for before, after in RENAMES.items():
        text = text.replace(before, after)
    forms = {p.name: p.read_bytes() for p in (ROOT / "tests" / "fixtures").glob("*.json")}
    with app.app_context():
        row, created = deploy(text.encode(), forms, "test")
        assert created and row.version == 2


def _migrate(api, world, **body):
    return api.as_(world["designer"]).post(
        "/api/v1/process-definitions/mini_therapy/migrations", json={"from_version": 1, "to_version": 2, **body}
    )


def _at_timer(api, world) -> dict:
    therapy, task = at_receipt(api, world)
    assert sign(api, world["logistics"], task["id"]).status_code == 200
    return therapy


def test_a_dry_run_says_which_could_move_and_why_not(app, api, world):
    at_task, at_timer = start(api, world["coord"]), _at_timer(api, world)
    deploy_version_two(app)
    unmapped = _migrate(api, world, dry_run=True)
    assert unmapped.status_code == 200
    reasons = {r["therapy_id"]: r for r in unmapped.get_json()["results"]}
    assert not reasons[at_task["id"]]["ok"] and "open activity 'Task_Enrol'" in reasons[at_task["id"]]["reason"]
    assert not reasons[at_timer["id"]]["ok"] and "has passed 'Task_Enrol'" in reasons[at_timer["id"]]["reason"]
    # The renamed wait would be recognised by its place in the flow; the renamed enrolment needs the map.
    mapped = _migrate(api, world, dry_run=True, activity_map={"Task_Enrol": "Task_Enrolment"}).get_json()
    assert mapped["dry_run"] and all(r["ok"] for r in mapped["results"]) and len(mapped["results"]) == 2
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{at_task['id']}").get_json()
    assert detail["process"]["version"] == 1  # a dry run changes nothing


def test_therapies_at_a_task_and_at_a_timer_move_and_finish_on_the_new_version(app, api, world, clock):
    at_task, at_timer = start(api, world["coord"]), _at_timer(api, world)
    task = only_task(api, world["coord"], at_task["id"])
    deploy_version_two(app)
    moved = _migrate(api, world, activity_map=RENAMES)
    assert moved.status_code == 200 and all(r["ok"] for r in moved.get_json()["results"]), moved.get_json()
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{at_task['id']}").get_json()
    assert detail["process"]["version"] == 2
    [open_task] = detail["open_tasks"]
    assert (open_task["id"], open_task["activity_id"]) == (task["id"], "Task_Enrolment")
    assert complete(api, world["coord"], task["id"], ENROLMENT).status_code == 200
    waiting = api.as_(world["coord"]).get(f"/api/v1/therapies/{at_timer['id']}").get_json()["waiting_for"]
    assert [w["activity_id"] for w in waiting] == ["Timer_Rest"]
    clock.advance(days=2)
    assert fire(app, at_timer["id"])
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{at_timer['id']}").get_json()["status"] == "completed"
    with app.app_context():
        entries = db.session.execute(select(AuditEntry).where(AuditEntry.action == "therapy.migrated")).scalars().all()
        assert len(entries) == 2 and {e.data["to_version"] for e in entries} == {2}
        published = db.session.execute(
            select(OutboxEvent.therapy_id).where(OutboxEvent.type == "therapy.migrated")
        ).scalars()
        assert sorted(published) == sorted([at_task["id"], at_timer["id"]])  # integrators hear of each move


def test_a_therapy_that_cannot_move_is_left_as_it_was(app, api, world):
    stays = start(api, world["coord"])
    deploy_version_two(app)
    answer = _migrate(api, world).get_json()  # the renamed enrolment is not mapped
    assert [(r["therapy_id"], r["ok"]) for r in answer["results"]] == [(stays["id"], False)]
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{stays['id']}").get_json()
    assert detail["process"]["version"] == 1 and detail["open_tasks"][0]["activity_id"] == "Task_Enrol"
    assert complete(api, world["coord"], detail["open_tasks"][0]["id"], ENROLMENT).status_code == 200


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("designer", {"to_version": 1}, 422, "same_version"),
        ("designer", {"to_version": 7}, 422, "unknown_version"),
        ("designer", {"activity_map": {"Task_Nowhere": "Task_Enrolment"}}, 422, "unknown_activity"),
        ("designer", {"activity_map": {"Task_Enrol": "Task_Nowhere"}}, 422, "unknown_activity"),
        ("designer", {"therapy_ids": ["not-a-therapy"]}, 404, "not_found"),
        ("coord", {}, 403, "forbidden"),
    ],
)
def test_a_wrong_migration_is_refused_and_moves_nothing(app, api, world, who, body, status, code):
    therapy = start(api, world["coord"])
    deploy_version_two(app)
    refused = api.as_(world[who]).post(
        "/api/v1/process-definitions/mini_therapy/migrations", json={"from_version": 1, "to_version": 2, **body}
    )
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (status, code), refused.get_json()
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["process"]["version"] == 1


def test_the_version_diff_names_what_was_added_and_removed(app, api, world):
    deploy_version_two(app)
    diff = api.as_(world["designer"]).get("/api/v1/process-definitions/mini_therapy/diff?from=1&to=2").get_json()
    assert (diff["added"], diff["removed"]) == (["Task_Enrolment"], ["Task_Enrol"])
