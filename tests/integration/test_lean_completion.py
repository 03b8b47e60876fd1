"""A task completion costs a known, small number of SQL statements, and answers with the tasks it made ready."""

from __future__ import annotations

from server.store.statements import counted, summary

from ..support.journeys import ENROLMENT, complete, only_task, start

# The most statements one completion of the mini diagram's enrolment may send (authentication, the task, the
# engine step with its notify service task, the task rows, the audit entries, the outbox and the commit).
MOST_STATEMENTS = {"sqlite": 37, "postgresql": 34}


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
