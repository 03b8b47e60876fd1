"""The migrations build exactly the schema the models describe (no drift), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ..support.audit_split import verified


def _differences(app) -> list:
    """What autogenerate would add to a new migration after every existing one has run."""
    from server.store.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
        return compare_metadata(context, db.metadata)


# SQLAlchemy cannot reflect expression indexes (the inbox's ordering index); the models declare them as well.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_the_migrated_schema_matches_the_models(app):
    """A model change without its migration (or the reverse) fails here, naming the table and column."""
    assert _differences(app) == []


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_a_column_without_its_migration_is_caught(app):
    """The comparison above can fail: a model column that no migration created shows up as a difference."""
    import sqlalchemy as sa

    from server.store.extensions import db

    metadata = sa.MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["therapy"].append_column(sa.Column("not_migrated", sa.Integer, nullable=True))
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert [(d[0], d[3].name) for d in differences] == [("add_column", "not_migrated")]


def test_the_network_migration_gives_existing_therapies_their_parties(database_url):
    """A database at the schema before parties: its therapies get the treatment party (their site) and the
    manufacturing site their data names when it is registered as one; its tasks belong to the treatment party."""
    import sqlalchemy as sa
    from flask_migrate import downgrade, upgrade

    from server import create_app
    from server.store.extensions import db

    app = create_app({"DATABASE_URL": database_url, "SCHEDULER": False, "SECRET_KEY": "t"})
    directory = app.extensions["migrate"].directory
    with app.app_context():
        upgrade(directory=directory, revision="0005")  # a new database (SQLite) ...
        downgrade(directory=directory, revision="0005")  # ... or one migrated to the end (PostgreSQL's template)
        now = "2026-01-01 00:00:00+00:00"
        statements = [
            "INSERT INTO site (id, code, name, kind, created_at) VALUES (1, 'SITE-A', 'A', 'treatment-centre', :now)",
            "INSERT INTO site (id, code, name, kind, created_at) VALUES (2, 'MFG-1', 'M', 'manufacturing', :now)",
            "INSERT INTO process_definition (id, key, version, name, checksum, bpmn_xml, forms, info, spec,"
            " deployed_at, deployed_by) VALUES ('d1', 'p', 1, 'P', 'c', '<x/>', '{}', '{}', '{}', :now, 't')",
        ]
        statements.append(
            "INSERT INTO therapy (id, definition_id, process_key, process_version, site_id, coi, patient_reference,"
            " status, state, data, waits, current_activities, row_version, created_at, updated_at, created_by)"
            " VALUES ('t1', 'd1', 'p', 1, 1, 'W000026000001', 'PT-1', 'active', '{}',"
            " '{\"manufacturing_site\": \"mfg-1\"}', '[]', '[]', 1, :now, :now, 't'),"
            " ('t2', 'd1', 'p', 1, 1, 'W000026000002', 'PT-2', 'active', '{}',"
            " '{\"manufacturing_site\": \"Somewhere\"}', '[]', '[]', 1, :now, :now, 't')"
        )
        statements.append(
            "INSERT INTO task (id, therapy_id, activity_id, name, role, site_id, status, created_at)"
            " VALUES ('k1', 't1', 'a', 'A', 'coordinator', 1, 'ready', :now)"
        )
        for statement in statements:
            db.session.execute(sa.text(statement), {"now": now})
        db.session.commit()
        upgrade(directory=directory)
        parties = db.session.execute(
            sa.text("SELECT therapy_id, party, site_id FROM therapy_party ORDER BY therapy_id, party")
        ).all()
        assert [tuple(row) for row in parties] == [
            ("t1", "manufacturing", 2),
            ("t1", "treatment", 1),
            ("t2", "treatment", 1),
        ]
        assert db.session.execute(sa.text("SELECT party, site_id FROM task")).one() == ("treatment", 1)
        indexes = (
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            if db.engine.dialect.name == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'task'"
        )
        assert "ix_task_inbox" in set(db.session.execute(sa.text(indexes)).scalars())  # kept through the table copy
        kinds = db.session.execute(sa.text("SELECT kind, code FROM reason_code WHERE code = 'OTHER'")).all()
        assert sorted(kind for kind, _code in kinds) == ["cancel", "hold", "reassign", "reschedule"]
        db.session.remove()
        db.engine.dispose()


def test_the_chains_migration_keeps_the_old_trail_verifiable_and_continues_it(database_url):
    """A trail written before chains existed (one global chain, its tip in audit_head) verifies exactly as before
    after the upgrade, as the start of the "system" chain; new entries go to their therapy's chain or continue the
    system chain; a change to an old entry is still named at that entry."""
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from flask_migrate import downgrade, upgrade

    from server import create_app
    from server.store import audit
    from server.store.extensions import db
    from server.store.uow import unit_of_work

    app = create_app({"DATABASE_URL": database_url, "SCHEDULER": False, "SECRET_KEY": "t"})
    directory = app.extensions["migrate"].directory
    with app.app_context():
        upgrade(directory=directory, revision="0015")  # a new database (SQLite) ...
        downgrade(directory=directory, revision="0015")  # ... or one migrated to the end (PostgreSQL's template)
        sqlite = db.engine.dialect.name == "sqlite"

        def stored_at(moment):  # as the model's column stores it: naive UTC text with microseconds on SQLite
            return moment.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else moment

        prev_hash = audit.GENESIS
        for seq in (1, 2, 3):
            fields = {
                "seq": seq,
                "at": datetime(2026, 1, 1, 0, 0, seq, tzinfo=UTC),
                "actor": "admin",
                "action": "user.created",
                "subject_type": "user",
                "subject_id": str(seq),
                "therapy_id": "t1" if seq == 2 else None,
                "site_id": None,
                "reason": None,
                "data": {"n": seq},
                "prev_hash": prev_hash,
            }
            fields["hash"] = prev_hash = audit.entry_hash(fields)  # the old canonical form (no chain)
            db.session.execute(
                sa.text(
                    "INSERT INTO audit_entry (seq, at, actor, action, subject_type, subject_id, therapy_id, site_id,"
                    " reason, data, prev_hash, hash) VALUES (:seq, :at, :actor, :action, :subject_type, :subject_id,"
                    " :therapy_id, :site_id, :reason, :data, :prev_hash, :hash)"
                ),
                {**fields, "data": f'{{"n":{seq}}}', "at": stored_at(fields["at"])},
            )
        db.session.execute(sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 3, :h)"), {"h": prev_hash})
        db.session.commit()
        upgrade(directory=directory)
        assert verified(app) == {
            "ok": True,
            "checked": 3,
            "chains": 1,
            "seals": 0,
            "last_hash": audit.merkle_root([("system", 3, 3, prev_hash)]),
            "spooled": 0,
        }
        with unit_of_work():
            audit.append("coord", "therapy.started", "therapy", "t9", therapy_id="t9")
            audit.append("admin", "user.created", "user", "4")
        result = verified(app)
        assert (result["ok"], result["checked"], result["chains"]) == (True, 5, 2)
        heads = db.session.execute(sa.text("SELECT chain, chain_seq, seq FROM audit_chain_head ORDER BY chain"))
        assert [tuple(row) for row in heads] == [("system", 4, 4), ("t9", 1, 5)]  # chained in chain order
        assert audit.seal()["heads"] == 2
        if db.engine.dialect.name == "sqlite":
            db.session.execute(sa.text("DROP TRIGGER audit_entry_no_update"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entry_no_change ON audit_entry"))
        db.session.execute(sa.text("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 2"))
        db.session.commit()
        broken = verified(app)
        assert (broken["ok"], broken["first_bad_seq"], broken["first_bad_chain"]) == (False, 2, "system")
        db.session.remove()
        db.engine.dispose()
