"""``Idempotency-Key``: the key commits with the effect, so it resolves to the committed answer or to nothing.

A repeat replays the first answer; work that never committed (a failure, a busy database, a crash of an
earlier version) leaves no key behind and a retry does it; concurrent requests with one key have one effect.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import func, select, text

from ..conftest import ROOT
from .conftest import Api

START = {"process_key": "mini_therapy", "site": "SITE-A"}


def start_body(reference: str) -> dict:
    """The body of POST /therapies for one patient."""
    return {**START, "patient": {"reference": reference}}


def therapies_of(app, reference: str) -> int:
    """How many therapies the database holds for the patient ``reference``."""
    from server.store.extensions import db
    from server.store.models import Therapy

    with app.app_context():
        count = db.session.execute(
            select(func.count()).select_from(Therapy).where(Therapy.patient_reference == reference)
        ).scalar_one()
        db.session.rollback()
        return count


def audit_actions(api, world, therapy_id: str | None = None) -> list[str]:
    """The actions of the audit trail (of one therapy when given), in order."""
    query = f"?therapy_id={therapy_id}&limit=500" if therapy_id else "?limit=500"
    return [e["action"] for e in api.as_(world["auditor"]).get(f"/api/v1/audit{query}").get_json()["items"]]


def assert_chain_intact(api, world) -> None:
    """The audit chain verifies."""
    verdict = api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()
    assert verdict["ok"] is True, verdict


def other_app(database_url: str, **config):
    """A second app on the same database (another process's view of it), with extra settings."""
    from server import create_app

    return create_app(
        {
            "DATABASE_URL": database_url,
            "SCHEDULER": False,
            "SECRET_KEY": "test-secret",
            "FORMS_DIR": str(ROOT / "forms"),
            "TESTING": True,
            **config,
        }
    )


def dispose(app) -> None:
    """Close an app's connections."""
    from server.store.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# -- (a) a write lock held longer than the busy timeout -------------------------------------------------------


def test_a_key_under_a_write_lock_held_past_the_busy_timeout_is_done_once_then_replayed(
    api, world, app, database_url, tmp_path
):
    if not database_url.startswith("sqlite"):
        pytest.skip("the database-wide write lock is SQLite's")
    busy_ms = 400
    fast = other_app(database_url, SQLITE_BUSY_TIMEOUT_MS=busy_ms, AUDIT_SPOOL_DIR=str(tmp_path))
    try:
        with fast.app_context():
            from server.store.extensions import db

            assert db.session.execute(text("PRAGMA busy_timeout")).scalar_one() == busy_ms
            db.session.rollback()
        coord = Api(fast.test_client(), world["coord"])
        key = {"Idempotency-Key": "start-under-lock"}

        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        release = threading.Timer(busy_ms * 1.6 / 1000, holder.execute, args=("ROLLBACK",))
        release.start()
        try:
            first = coord.post("/api/v1/therapies", json=start_body("PT-LOCK"), headers=key)
        finally:
            release.join()
            holder.close()
        assert first.status_code in (201, 409), first.get_json()
        if first.status_code == 409:
            assert first.get_json()["error"]["code"] == "busy"
            assert therapies_of(app, "PT-LOCK") == 0, "a refused request changes nothing"

        retry = coord.post("/api/v1/therapies", json=start_body("PT-LOCK"), headers=key)
        again = coord.post("/api/v1/therapies", json=start_body("PT-LOCK"), headers=key)
        assert retry.status_code == again.status_code == 201, (retry.get_json(), again.get_json())
        assert again.get_json() == retry.get_json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        if first.status_code == 201:
            assert first.get_json() == retry.get_json()
        assert therapies_of(app, "PT-LOCK") == 1, "one therapy, one COI, for one key"
    finally:
        dispose(fast)
    assert_chain_intact(api, world)


# -- (b) work that failed or never committed leaves no key --------------------------------------------------


def test_a_key_left_unanswered_by_an_earlier_version_does_not_block_the_retry(api, world, app):
    from server.store.extensions import db
    from server.store.models import IdempotencyRecord, User

    with app.app_context():  # what a crash of an earlier version left: a key reserved, no answer, no effect
        user_id = db.session.execute(select(User.id).where(User.username == "coord")).scalar_one()
        db.session.add(
            IdempotencyRecord(
                user_id=user_id, key="crashed-start", method="POST", path="/api/v1/therapies", status=0, body={}
            )
        )
        db.session.commit()
    key = {"Idempotency-Key": "crashed-start"}
    retry = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-CRASH"), headers=key)
    assert retry.status_code == 201, retry.get_json()
    again = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-CRASH"), headers=key)
    assert again.status_code == 201 and again.get_json() == retry.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert therapies_of(app, "PT-CRASH") == 1


def test_a_failure_after_the_work_takes_the_work_back_and_the_retry_does_it_once(api, world, app, monkeypatch):
    from server.api import therapies as views

    summary = views.therapy_summary
    calls = []

    def failing_summary(therapy):
        calls.append(therapy.id)
        if len(calls) == 1:
            raise RuntimeError("the answer could not be built")
        return summary(therapy)

    monkeypatch.setattr(views, "therapy_summary", failing_summary)
    key = {"Idempotency-Key": "start-then-fail"}
    failed = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-FAIL"), headers=key)
    assert failed.status_code == 500 and failed.get_json()["error"]["code"] == "internal_error"
    assert therapies_of(app, "PT-FAIL") == 0, "nothing of the failed request stays"
    retry = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-FAIL"), headers=key)
    assert retry.status_code == 201, retry.get_json()
    assert retry.headers.get("Idempotent-Replayed") is None
    assert therapies_of(app, "PT-FAIL") == 1
    assert audit_actions(api, world).count("therapy.started") == 1
    assert_chain_intact(api, world)


def test_a_transient_refusal_is_not_the_keys_answer(api, world, app, monkeypatch):
    from server.errors import Conflict
    from server.workflow import therapies as usecases

    original = usecases.start_therapy
    attempts = []

    def losing_once(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise Conflict(
                "Someone else changed this therapy at the same moment; reload and try again.", code="version_conflict"
            )
        return original(*args, **kwargs)

    monkeypatch.setattr(usecases, "start_therapy", losing_once)
    key = {"Idempotency-Key": "start-after-conflict"}
    lost = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-RACE"), headers=key)
    assert lost.status_code == 409 and lost.get_json()["error"]["code"] == "version_conflict"
    retry = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-RACE"), headers=key)
    assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") is None
    assert therapies_of(app, "PT-RACE") == 1


def test_a_refusal_is_the_keys_answer_and_commits_with_what_it_recorded(api, world, app):
    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-REFUSE")).get_json()
    message = {"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"dock": 1}}
    key = {"Idempotency-Key": "early-delivery"}
    refused = api.as_(world["integrator"]).post("/api/v1/messages", json=message, headers=key)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_waiting"
    again = api.as_(world["integrator"]).post("/api/v1/messages", json=message, headers=key)
    assert again.status_code == 409 and again.get_json() == refused.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert audit_actions(api, world, therapy["id"]).count("message.refused") == 1
    assert_chain_intact(api, world)


def test_a_refused_unit_takes_back_its_writes_and_audit_entries_but_the_refusal_is_kept(api, world, app, monkeypatch):
    from server.errors import Invalid
    from server.workflow import therapies as usecases

    original = usecases.apply_outcome

    def refuse_after_writing(therapy, outcome, actor, **kwargs):
        original(therapy, outcome, actor, **kwargs)  # stages the therapy's audit entries and events
        raise Invalid("Refused after the first writes.", code="refused_late")

    monkeypatch.setattr(usecases, "apply_outcome", refuse_after_writing)
    key = {"Idempotency-Key": "refused-late"}
    refused = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-LATE"), headers=key)
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "refused_late"
    monkeypatch.setattr(usecases, "apply_outcome", original)
    again = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-LATE"), headers=key)
    assert again.status_code == 422 and again.headers.get("Idempotent-Replayed") == "true"
    assert therapies_of(app, "PT-LATE") == 0
    assert "therapy.started" not in audit_actions(api, world)
    assert_chain_intact(api, world)
    later = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-LATE"))
    assert later.status_code == 201 and audit_actions(api, world).count("therapy.started") == 1
    assert_chain_intact(api, world)


def test_a_key_used_for_another_request_is_refused(api, world):
    key = {"Idempotency-Key": "one-key"}
    first = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-KEY"), headers=key)
    assert first.status_code == 201
    other = api.as_(world["coord"]).post(
        f"/api/v1/therapies/{first.get_json()['id']}/cancel", json={"reason": "duplicate"}, headers=key
    )
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    too_long = api.as_(world["coord"]).post(
        "/api/v1/therapies", json=start_body("PT-KEY"), headers={"Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 422 and too_long.get_json()["error"]["code"] == "invalid_idempotency_key"


# -- (c) concurrent requests with one key -----------------------------------------------------------------


def _together(count: int, send) -> list:
    """Call ``send()`` from ``count`` threads released at the same moment; their answers."""
    barrier = threading.Barrier(count)
    answers: list = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        answers[index] = send()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_concurrent_requests_with_one_key_have_one_effect_and_one_answer(api, world, app):
    key = {"Idempotency-Key": "start-concurrently"}
    client = app.test_client()
    headers = {**key, "Authorization": f"Bearer {world['coord']}"}
    answers = _together(6, lambda: client.post("/api/v1/therapies", json=start_body("PT-TWIN"), headers=headers))
    assert [a.status_code for a in answers] == [201] * 6, [a.get_json() for a in answers]
    assert all(a.get_json() == answers[0].get_json() for a in answers)
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 5
    assert therapies_of(app, "PT-TWIN") == 1
    assert audit_actions(api, world).count("therapy.started") == 1


def test_concurrent_completions_of_a_task_with_one_key_complete_it_once(api, world, app):
    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-TASK")).get_json()
    [task] = api.as_(world["coord"]).get(f"/api/v1/tasks?therapy_id={therapy['id']}").get_json()["items"]
    client = app.test_client()
    headers = {"Idempotency-Key": "enrol-concurrently", "Authorization": f"Bearer {world['coord']}"}
    completion = {"data": {"eligible": True, "patient_initials": "TW"}}
    answers = _together(
        5, lambda: client.post(f"/api/v1/tasks/{task['id']}/complete", json=completion, headers=headers)
    )
    assert [a.status_code for a in answers] == [200] * 5, [a.get_json() for a in answers]
    assert all(a.get_json() == answers[0].get_json() for a in answers)
    assert audit_actions(api, world, therapy["id"]).count("task.completed") == 1
    assert_chain_intact(api, world)


def test_a_replay_is_answered_while_another_writer_holds_the_lock(api, world, app, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("the database-wide write lock is SQLite's")
    key = {"Idempotency-Key": "replay-under-lock"}
    first = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-READ"), headers=key)
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        again = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-READ"), headers=key)
        assert time.monotonic() - began < 5, "a replay only reads"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert again.status_code == 201 and again.get_json() == first.get_json()


def test_post_commit_hooks_of_a_keyed_request_run_after_its_commit_and_only_for_committed_work(
    api, world, app, monkeypatch
):
    from server.api import therapies as views
    from server.store import audit
    from server.store.uow import unit_of_work
    from server.workflow import therapies as usecases

    armed = []

    def arm_and_record(therapy_id, due):
        """A hook that writes on its own, as a hook may (it runs outside the request's transaction)."""
        armed.append(therapy_id)
        with unit_of_work():
            audit.append("system", "hook.ran", "therapy", therapy_id, therapy_id=therapy_id)

    monkeypatch.setattr(usecases, "notify_scheduler", arm_and_record)
    summary = views.therapy_summary
    monkeypatch.setattr(views, "therapy_summary", lambda therapy: 1 / 0)
    failed = api.as_(world["coord"]).post(
        "/api/v1/therapies", json=start_body("PT-HOOK"), headers={"Idempotency-Key": "hook-1"}
    )
    assert failed.status_code == 500 and armed == [], "no hook runs for work that was taken back"
    monkeypatch.setattr(views, "therapy_summary", summary)
    done = api.as_(world["coord"]).post(
        "/api/v1/therapies", json=start_body("PT-HOOK"), headers={"Idempotency-Key": "hook-1"}
    )
    assert done.status_code == 201 and armed == [done.get_json()["id"]]
    assert audit_actions(api, world, done.get_json()["id"]).count("hook.ran") == 1, "the hook's own write stays"
    assert_chain_intact(api, world)


def test_a_wrong_scan_under_a_key_records_its_alert_once_and_replays_the_refusal(api, world, app):
    from server.store.extensions import db
    from server.store.models import Alert

    therapy = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-SCAN")).get_json()
    other = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-OTHER")).get_json()
    transfer = {"material_id": "BAG-1", "from_party": "Courier", "to_party": "Clinic", "scanned_coi": other["coi"]}
    key = {"Idempotency-Key": "handoff-wrong-bag"}
    url = f"/api/v1/therapies/{therapy['id']}/custody"
    refused = api.as_(world["logistics"]).post(url, json=transfer, headers=key)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "coi_mismatch"
    again = api.as_(world["logistics"]).post(url, json=transfer, headers=key)
    assert again.status_code == 409 and again.get_json() == refused.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    with app.app_context():
        alerts = db.session.execute(
            select(func.count())
            .select_from(Alert)
            .where(Alert.therapy_id == therapy["id"], Alert.kind == "coi_mismatch")
        ).scalar_one()
    assert alerts == 1
    assert audit_actions(api, world, therapy["id"]).count("coi.mismatch") == 1
    assert api.as_(world["coord"]).get(url).get_json()["items"] == []
    assert_chain_intact(api, world)


def test_a_stray_commit_inside_a_keyed_request_fails_instead_of_committing_part_of_it(api, world, app, monkeypatch):
    from server.api import therapies as views
    from server.store.extensions import db

    summary = views.therapy_summary

    def commit_then_answer(therapy):
        db.session.commit()  # what no code may do inside a request that commits as a whole
        return summary(therapy)

    monkeypatch.setattr(views, "therapy_summary", commit_then_answer)
    key = {"Idempotency-Key": "stray-commit"}
    failed = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-STRAY"), headers=key)
    assert failed.status_code == 500
    assert therapies_of(app, "PT-STRAY") == 0
    monkeypatch.setattr(views, "therapy_summary", summary)
    retry = api.as_(world["coord"]).post("/api/v1/therapies", json=start_body("PT-STRAY"), headers=key)
    assert retry.status_code == 201 and therapies_of(app, "PT-STRAY") == 1


def test_a_failed_unit_inside_a_request_keeps_the_audit_entries_staged_before_it(api, world, app):
    from server.errors import Invalid
    from server.store import audit
    from server.store.uow import enclosing_transaction, savepoint, unit_of_work

    with app.test_request_context("/api/v1/therapies", method="POST"):
        with enclosing_transaction() as transaction:
            audit.append("test", "before.unit", "endpoint", "test")
            with pytest.raises(Invalid):
                with unit_of_work():
                    with savepoint():  # an operator's savepoint, released inside the unit
                        audit.append("test", "inside.unit", "endpoint", "test")
                    raise Invalid("The unit is refused after its operator ran.")
            transaction.commit()
    actions = audit_actions(api, world)
    assert "before.unit" in actions and "inside.unit" not in actions
    assert_chain_intact(api, world)
