"""A task completion costs a known, small number of SQL statements, and answers with the tasks it made ready."""

from __future__ import annotations

from server.store.statements import counted, summary

from ..conftest import ROOT
from ..support.journeys import ENROLMENT, complete, only_task, start, tasks_of

# The most statements (commits included) one completion of the mini diagram's enrolment may send: authentication,
# the task, the engine step with its notify service task, the task rows, the audit entries, the outbox, the commit.
MOST_STATEMENTS = {"sqlite": 22, "postgresql": 17}
# The same for a step with no service task (the next-tasks diagram's enrolment, making three tasks ready).
MOST_STATEMENTS_PLAIN = {"sqlite": 14, "postgresql": 8}


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


def _deploy_next_tasks(app) -> None:
    """The next-tasks diagram: enrolment, then three tasks at once (consent with a 48 h deadline and packing at
    the treatment centre, a slot reservation by the manufacturing party), then the end."""
    from server.workflow.definitions import deploy

    with app.app_context():
        deploy((ROOT / "tests" / "fixtures" / "next-tasks.bpmn").read_bytes(), {}, "test")


def _start_next_tasks(api, token: str, parties: dict | None) -> str:
    body = {"process_key": "next_tasks", "site": "SITE-A", "patient": {"reference": "PT-NEXT"}}
    if parties is not None:
        body["parties"] = parties
    created = api.as_(token).post("/api/v1/therapies", json=body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()["id"]


def test_the_completion_answer_names_the_tasks_it_made_ready_that_the_caller_may_see(app, api, world):
    _deploy_next_tasks(app)
    therapy_id = _start_next_tasks(api, world["coord"], {"manufacturing": "MFG-1"})
    enrol = only_task(api, world["coord"], therapy_id)

    done = complete(api, world["coord"], enrol["id"], {})
    assert done.status_code == 200, done.get_json()
    listed = {t["activity_id"]: t for t in tasks_of(api, world["coord"], therapy_id)}
    # The reservation is MFG-1's: the coordinator at SITE-A does not see it, in the answer as anywhere else.
    assert [t["activity_id"] for t in done.get_json()["next_tasks"]] == ["Task_Consent", "Task_Pack"]
    consent, pack = done.get_json()["next_tasks"]
    assert consent == {
        "id": listed["Task_Consent"]["id"],
        "activity_id": "Task_Consent",
        "name": "Record consent",
        "role": "coordinator",
        "due_at": listed["Task_Consent"]["due_at"],
    }
    assert consent["due_at"] is not None and pack["due_at"] is None  # only consent has a deadline (48 h)

    # The next task is completed straight from the answer, with no GET in between.
    again = complete(api, world["coord"], consent["id"], {})
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["next_tasks"] == []  # the join waits for the others: nothing new is ready


def test_next_tasks_include_other_roles_tasks_the_caller_may_see(app, api, world):
    """While the manufacturing party has no site, its task is the treatment centre's to see (it names the site),
    so the coordinator's answer names it too, with its role."""
    _deploy_next_tasks(app)
    therapy_id = _start_next_tasks(api, world["coord"], None)
    enrol = only_task(api, world["coord"], therapy_id)
    done = complete(api, world["coord"], enrol["id"], {})
    assert done.status_code == 200, done.get_json()
    roles = {t["activity_id"]: t["role"] for t in done.get_json()["next_tasks"]}
    assert roles == {"Task_Consent": "coordinator", "Task_Pack": "coordinator", "Task_Reserve": "manufacturing"}


def test_a_step_without_service_tasks_writes_only_what_it_stored(app, api, world, database_url):
    """No savepoint and no read inside the write transaction but the therapy's open tasks: the
    engine step runs on what the checks read, before the write lock (SQLite's BEGIN IMMEDIATE) is taken."""
    _deploy_next_tasks(app)
    therapy_id = _start_next_tasks(api, world["coord"], {"manufacturing": "MFG-1"})
    enrol = only_task(api, world["coord"], therapy_id)
    with app.app_context():
        from server.store.extensions import db

        engine = db.engine
    with counted(engine) as statements:
        done = complete(api, world["coord"], enrol["id"], {})
    assert done.status_code == 200, done.get_json()
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert len(statements) <= MOST_STATEMENTS_PLAIN[backend], summary(statements)
    kinds = [str(s) for s in statements]
    assert not any("SAVEPOINT" in kind for kind in kinds), summary(statements)
    writes = ("BEGIN IMMEDIATE", "INSERT", "UPDATE", "DELETE")
    locked = next(i for i, kind in enumerate(kinds) if kind.startswith(writes))
    read = [k for k in kinds[:locked] if k not in ("BEGIN", "COMMIT")]
    assert read == ["SELECT api_token", "SELECT task"], summary(statements)
    if backend == "postgresql":  # one transaction from the checks to the commit
        assert kinds.count("COMMIT") == 1, summary(statements)
        # With no webhook subscription the events need no ids back: they go in with the audit entries.
        assert "INSERT outbox_event (batch)" not in kinds and "INSERT outbox_event" not in kinds, summary(statements)
    with app.app_context():
        import sqlalchemy as sa

        from server.store.extensions import db
        from server.store.models import OutboxEvent

        events = db.session.execute(
            sa.select(OutboxEvent.type, OutboxEvent.data)
            .where(OutboxEvent.therapy_id == therapy_id)
            .order_by(OutboxEvent.id)
        ).all()
    ready = [data["activity_id"] for kind, data in events if kind == "task.ready"]
    assert [kind for kind, _data in events] == [
        "therapy.started",
        "task.ready",
        "task.completed",
        "task.ready",
        "task.ready",
        "task.ready",
    ], events
    assert ready[1:] == ["Task_Consent", "Task_Pack", "Task_Reserve"], events


def test_a_subscription_another_process_makes_or_ends_counts_from_the_next_completion(
    app, api, world, database_url, clock
):
    """The fan-out keeps the subscriptions it read, and reads them again when a request's token read says they
    changed: another server process's new subscription gets the very next completion's events, and once it is
    ended there, no more."""
    from server import create_app
    from server.store.statements import counted

    from .conftest import Api, _app_config, _dispose

    _deploy_next_tasks(app)
    first = _start_next_tasks(api, world["coord"], {"manufacturing": "MFG-1"})  # fanned out: no subscription
    second = _start_next_tasks(api, world["coord"], {"manufacturing": "MFG-1"})
    other = create_app(_app_config(database_url, clock))  # another server process, with caches of its own
    try:
        elsewhere = Api(other.test_client(), world["integrator"])
        made = elsewhere.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks/tether", "events": ["task.*"]})
        assert made.status_code == 201, made.get_json()
        hook = made.get_json()["id"]

        done = complete(api, world["coord"], only_task(api, world["coord"], first)["id"], {})
        assert done.status_code == 200, done.get_json()
        listed = api.as_(world["integrator"]).get(f"/api/v1/webhooks/{hook}/deliveries?limit=500").get_json()
        types = sorted(d["event_type"] for d in listed["items"])
        assert types == ["task.completed", "task.ready", "task.ready", "task.ready"], types

        # Unchanged since: the next completion trusts what it read (no statement for the subscriptions).
        with app.app_context():
            from server.store.extensions import db

            engine = db.engine
        with counted(engine) as statements:
            done = complete(api, world["coord"], only_task(api, world["coord"], second)["id"], {})
        assert done.status_code == 200, done.get_json()
        if database_url.startswith("postgresql"):
            assert "SELECT webhook_subscription" not in [str(s) for s in statements], summary(statements)
        listed = api.as_(world["integrator"]).get(f"/api/v1/webhooks/{hook}/deliveries?limit=500").get_json()
        assert len(listed["items"]) == 8

        ended = elsewhere.delete(f"/api/v1/webhooks/{hook}")
        assert ended.status_code in (200, 204), ended.get_data(as_text=True)
        consent = next(t for t in tasks_of(api, world["coord"], first) if t["activity_id"] == "Task_Consent")
        done = complete(api, world["coord"], consent["id"], {})
        assert done.status_code == 200, done.get_json()
        with app.app_context():
            from sqlalchemy import func, select

            from server.store.extensions import db
            from server.store.models import WebhookDelivery

            count = db.session.execute(
                select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.subscription_id == hook)
            ).scalar_one()
        assert count == 8  # nothing for the completion after the end
    finally:
        _dispose(other)


def test_the_audit_entries_insert_has_one_text_whatever_the_number_of_entries_and_the_trail_verifies(
    app, api, world, database_url
):
    """On PostgreSQL the entries, the chain head's move and the outbox events go in as one statement whose text
    depends only on the tables and columns it writes (the rows are parameters), so it is prepared once, not
    compiled at every commit; the entries' data is stored as the canonical text the chain hashes, and the
    trail verifies."""
    import sqlalchemy as sa

    _deploy_next_tasks(app)
    with app.app_context():
        from server.store.extensions import db

        engine = db.engine
    texts: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        if "INSERT INTO audit_entry" in statement:
            texts.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        mini = start(api, world["coord"])  # its enrolment's step runs a service task: more entries
        done = complete(api, world["coord"], only_task(api, world["coord"], mini["id"])["id"], ENROLMENT)
        assert done.status_code == 200, done.get_json()
        plain = _start_next_tasks(api, world["coord"], {"manufacturing": "MFG-1"})
        done = complete(api, world["coord"], only_task(api, world["coord"], plain)["id"], {})
        assert done.status_code == 200, done.get_json()
        consent = next(t for t in done.get_json()["next_tasks"] if t["activity_id"] == "Task_Consent")
        done = complete(api, world["coord"], consent["id"], {})
        assert done.status_code == 200, done.get_json()
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    if database_url.startswith("postgresql"):
        completions = texts[-3:]
        assert len(set(completions[1:])) == 1, completions  # two plain completions, different numbers of rows
        assert all("json_to_recordset" in text for text in completions), completions
    with app.app_context():
        from server.store import audit
        from server.store.extensions import compact_json, db
        from server.store.models import AuditEntry

        stored = db.session.execute(
            sa.select(sa.cast(AuditEntry.data, sa.Text), AuditEntry.data).where(
                AuditEntry.therapy_id.in_([mini["id"], plain])
            )
        ).all()
        assert stored and all(text == compact_json(data) for text, data in stored)
        assert audit.verify()["ok"] is True
