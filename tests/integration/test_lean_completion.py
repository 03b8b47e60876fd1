"""A task completion costs a known, small number of SQL statements, and answers with the tasks it made ready."""

from __future__ import annotations

from server.store.statements import counted, summary

from ..support.journeys import ENROLMENT, complete, only_task, start

# The most statements one completion of the mini diagram's enrolment may send (authentication, the task, the
# engine step with its notify service task, the task rows, the audit entries, the outbox and the commit).
MOST_STATEMENTS = {"sqlite": 23, "postgresql": 21}


def test_one_completion_sends_at_most_a_pinned_number_of_statements(app, api, world, database_url):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    with app.app_context():
        from server.store.extensions import db

        engine = db.engine
    with counted(engine) as statements:
        done = complete(api, world["coord"], task["id"], ENROLMENT)
    assert done.status_code == 200, done.get_json()
    assert len(statements) <= MOST_STATEMENTS[backend], summary(statements)


def test_a_change_between_the_checks_and_the_step_is_refused_not_overwritten(app, api, world, monkeypatch):
    """The completion reads the task and its therapy once, for its checks; the engine step runs on them without
    reading them again. Someone else's change committed in between is caught by the therapy's version check:
    409, and their change stands."""
    import sqlalchemy as sa

    from server.workflow import therapies

    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    checked = therapies.validate_form_data

    def checked_then_changed(*args):
        checked(*args)
        with app.app_context():
            from server.store.extensions import db

            with db.engine.begin() as other:  # another request's commit, after the checks
                other.execute(
                    sa.text(
                        "UPDATE therapy SET stage = 'Changed meanwhile', row_version = row_version + 1 WHERE id = :id"
                    ),
                    {"id": therapy["id"]},
                )

    monkeypatch.setattr(therapies, "validate_form_data", checked_then_changed)
    refused = complete(api, world["coord"], task["id"], ENROLMENT)
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["code"] == "version_conflict"
    monkeypatch.undo()

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["stage"] == "Changed meanwhile"
    assert only_task(api, world["coord"], therapy["id"])["id"] == task["id"]  # still ready
    again = complete(api, world["coord"], task["id"], ENROLMENT)
    assert again.status_code == 200, again.get_json()
