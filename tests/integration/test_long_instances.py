"""A therapy whose diagram loops for weeks keeps a small engine state; every step stays in the audit trail."""

from __future__ import annotations

from ..conftest import ROOT


def test_a_looping_therapy_keeps_its_state_small_and_its_history_audited(app, api, world, clock):
    from server.store import audit
    from server.store.extensions import db
    from server.store.models import AuditEntry, Therapy
    from server.workflow.definitions import deploy
    from server.workflow.therapies import fire_due_timers

    fixtures = ROOT / "tests" / "fixtures"
    with app.app_context():
        deploy(
            (fixtures / "daily-check-loop.bpmn").read_bytes(),
            {"daily-check.schema.json": (fixtures / "daily-check.schema.json").read_bytes()},
            "test",
        )
    coord = api.as_(world["coord"])
    started = coord.post(
        "/api/v1/therapies",
        json={
            "process_key": "daily_check",
            "site": "SITE-A",
            "patient": {"reference": "PT-LOOP"},
            "data": {"day": 0, "days": 30, "summaries": 0},
        },
    )
    assert started.status_code == 201, started.get_json()
    therapy_id = started.get_json()["id"]
    sizes = []
    for day in range(1, 31):
        (task,) = coord.get(f"/api/v1/tasks?therapy_id={therapy_id}&status=ready").get_json()["items"]
        done = coord.post(f"/api/v1/tasks/{task['id']}/complete", json={"data": {"well": True}})
        assert done.status_code == 200, done.get_json()
        if day < 30:
            clock.advance(hours=25)
            with app.app_context():
                assert fire_due_timers(therapy_id)
        with app.app_context():
            sizes.append(len(db.session.get(Therapy, therapy_id).state["tasks"]))

    detail = coord.get(f"/api/v1/therapies/{therapy_id}").get_json()
    assert detail["status"] == "completed"
    assert max(sizes) <= 120  # compaction keeps the tree near its threshold; uncut it would hold about 420 tasks
    with app.app_context():
        therapy = db.session.get(Therapy, therapy_id)
        assert therapy.data["day"] == therapy.data["summaries"] == 30
        actions = [e.action for e in db.session.query(AuditEntry).filter_by(therapy_id=therapy_id)]
        assert actions.count("task.completed") == 30 and actions.count("timer.fired") == 29
        assert "history.compacted" in actions
        compacted = db.session.query(AuditEntry).filter_by(therapy_id=therapy_id, action="history.compacted").first()
        assert compacted.data["removed"] > 0 and compacted.data["kept"] > 0
        assert audit.verify()["ok"]
