"""What a commit seals: the unit of work fans the staged outbox events out and chains the staged audit entries.

Each test works below the API, in the app's context, so that it shows the unit of work's own promise: what
it commits carries its audit entries and webhook deliveries, what it takes back carries neither, and a
commit that goes around it while something is staged is refused rather than losing what was staged.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.errors import Invalid

HOOK_URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def subscription(app, world):
    """An active subscription of the integrator to every event (a loopback URL, allowed for this app)."""
    from server.access.accounts import find_user
    from server.integration import webhooks
    from server.store.extensions import db

    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    with app.app_context():
        subscription_id = webhooks.subscribe(HOOK_URL, ["*"], find_user("integrator")).id
        db.session.remove()
    return subscription_id


def record(action: str, event_type: str) -> None:
    """What a use case leaves for others: one audit entry and one outbox event."""
    from server.integration import outbox
    from server.store import audit

    audit.append("test", action, "endpoint", "uow")
    outbox.emit(event_type, {"action": action})


def chained(action: str) -> list[tuple[int, str]]:
    """(seq, hash) of the committed audit entries with ``action``."""
    from server.store.extensions import db
    from server.store.models import AuditEntry

    statement = select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.action == action)
    return [(seq, digest) for seq, digest in db.session.execute(statement)]


def delivered(event_type: str, subscription_id: str) -> int:
    """How many committed deliveries of events of ``event_type`` the subscription has."""
    from server.store.extensions import db
    from server.store.models import OutboxEvent, WebhookDelivery

    return db.session.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.outbox_event_id)
        .where(OutboxEvent.type == event_type, WebhookDelivery.subscription_id == subscription_id)
    ).scalar_one()


def events_of(event_type: str) -> int:
    """How many outbox events of ``event_type`` are committed."""
    from server.store.extensions import db
    from server.store.models import OutboxEvent

    statement = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == event_type)
    return db.session.execute(statement).scalar_one()


def chain_verifies() -> bool:
    """Whether the whole audit chain verifies."""
    from server.store import audit

    return audit.verify()["ok"]


def test_a_unit_of_work_commits_its_entries_chained_and_its_events_fanned_out_then_rings_the_bell(app, subscription):
    from server.integration.webhooks import bell
    from server.store.extensions import db
    from server.store.uow import unit_of_work

    rings = bell(app).rings
    with app.app_context():
        with unit_of_work():
            record("uow.recorded", "uow.happened")
            assert bell(app).rings == rings, "the bell waits for the commit"
        db.session.remove()
        [(seq, digest)] = chained("uow.recorded")
        assert seq > 0 and len(digest) == 64
        assert delivered("uow.happened", subscription) == 1
        assert chain_verifies()
    assert bell(app).rings == rings + 1


def test_a_unit_of_work_that_fails_commits_neither_entry_nor_event_nor_delivery_and_rings_no_bell(app, subscription):
    from server.integration.webhooks import bell
    from server.store.uow import unit_of_work

    rings = bell(app).rings
    with app.app_context():
        with pytest.raises(Invalid):
            with unit_of_work():
                record("uow.refused", "uow.refused")
                raise Invalid("The use case is refused after it recorded.")
        assert chained("uow.refused") == []
        assert events_of("uow.refused") == 0 and delivered("uow.refused", subscription) == 0
        with unit_of_work():
            record("uow.after", "uow.after")  # the next unit starts with nothing left over
        assert len(chained("uow.after")) == 1 and delivered("uow.after", subscription) == 1
        assert chain_verifies()
    assert bell(app).rings == rings + 1


def test_a_rolled_back_savepoint_inside_a_request_leaves_neither_entry_nor_delivery(app, subscription):
    from server.store.uow import enclosing_transaction, savepoint, unit_of_work

    with app.test_request_context("/api/v1/therapies", method="POST"):
        with enclosing_transaction() as transaction:
            record("before.units", "before.units")
            with unit_of_work():
                record("kept.unit", "kept.unit")
                with pytest.raises(Invalid):
                    with savepoint():  # an operator that fails inside a unit that goes on
                        record("failed.operator", "failed.operator")
                        raise Invalid("The operator failed.")
            with pytest.raises(Invalid):
                with unit_of_work():
                    record("failed.unit", "failed.unit")
                    raise Invalid("The unit is refused after it recorded.")
            record("after.units", "after.units")
            transaction.commit()
    with app.app_context():
        for kept in ("before.units", "kept.unit", "after.units"):
            assert len(chained(kept)) == 1 and delivered(kept, subscription) == 1, kept
        for taken_back in ("failed.operator", "failed.unit"):
            assert chained(taken_back) == [] and events_of(taken_back) == 0, taken_back
        seqs = [chained(action)[0][0] for action in ("before.units", "kept.unit", "after.units")]
        assert seqs == sorted(seqs), "the entries are chained in the order they were recorded"
        assert chain_verifies()


def test_what_a_whole_rollback_took_back_stays_out_when_a_savepoint_around_it_fails(app, subscription):
    from server.store.extensions import db
    from server.store.uow import savepoint, unit_of_work

    with app.app_context():
        with unit_of_work():
            record("rolled.back", "rolled.back")
            with pytest.raises(Invalid):
                with savepoint():
                    db.session.rollback()  # as a refusal does before it records itself on its own
                    raise Invalid("The step is refused.")
            record("recorded.after", "recorded.after")
        assert chained("rolled.back") == [] and events_of("rolled.back") == 0
        assert len(chained("recorded.after")) == 1 and delivered("recorded.after", subscription) == 1
        assert chain_verifies()


@pytest.mark.parametrize("staging", ["audit entry", "outbox event"])
def test_a_commit_that_bypasses_the_unit_of_work_with_something_staged_is_refused(app, subscription, staging):
    from server.integration import outbox
    from server.store import audit
    from server.store.extensions import db

    with app.app_context():
        if staging == "audit entry":
            audit.append("test", "stray.append", "endpoint", "uow")
        else:
            outbox.emit("stray.emit", {})
        with pytest.raises(RuntimeError, match="unit_of_work"):
            db.session.commit()
        db.session.rollback()
        assert chained("stray.append") == [] and events_of("stray.emit") == 0
        db.session.commit()  # once nothing is staged, a plain commit is allowed again
        assert chain_verifies()


def test_a_unit_inside_another_joins_it_and_its_failure_takes_back_only_its_own_writes(app, world):
    from server.store.uow import unit_of_work

    with app.app_context():
        with unit_of_work():
            record("outer.first", "test.outer")
            with pytest.raises(Invalid), unit_of_work():
                record("inner.failed", "test.inner")
                raise Invalid("refused inside")
            with unit_of_work():
                record("inner.kept", "test.inner")
            record("outer.last", "test.outer")
        kept = [chained(a) for a in ("outer.first", "inner.kept", "outer.last")]
        assert all(len(rows) == 1 for rows in kept) and chained("inner.failed") == []
        seqs = [rows[0][0] for rows in kept]
        assert seqs == sorted(seqs)  # chained in the order they were written, in one commit
