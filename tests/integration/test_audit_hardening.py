"""The audit trail is append-only in the database itself, also against SQLite's REPLACE and a rewound tip."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def sql(app, *statements, params=None):
    """Run raw SQL as someone with database access would, committing at once."""
    from server.store.extensions import db

    with app.app_context():
        with db.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params or {})


def dialect(app) -> str:
    """The database backend of ``app``."""
    from server.store.extensions import db

    with app.app_context():
        return db.engine.dialect.name


def stored(app, seq):
    """(actor, action, hash) of the entry at ``seq``."""
    from server.store.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT actor, action, hash FROM audit_entry WHERE seq = :seq"), {"seq": seq}
        ).one()


def head(app):
    """(seq, hash) of the chain's tip."""
    from server.store.extensions import db

    with app.app_context():
        return tuple(db.session.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one())


def verify(app):
    """The chain's verification verdict."""
    from server.store import audit

    with app.app_context():
        return audit.verify()


def append_one(app, action="test.appended"):
    """One more entry through the application."""
    from server.store import audit
    from server.store.uow import unit_of_work

    with app.app_context():
        with unit_of_work():
            audit.append("test", action, "test", "1")


_COLUMNS = "seq, at, actor, action, subject_type, subject_id, therapy_id, site_id, reason, data, prev_hash, hash"
_FORGED = (
    "SELECT seq, at, 'mallory', action, subject_type, subject_id, therapy_id, site_id, reason, data, "
    "prev_hash, hash FROM audit_entry WHERE seq = 3"
)


def test_insert_or_replace_cannot_swap_an_audit_entry(app, world):
    before, chain = stored(app, 3), verify(app)
    assert chain["ok"] is True
    if dialect(app) == "sqlite":
        for verb in ("INSERT OR REPLACE INTO", "REPLACE INTO"):
            with pytest.raises(sa.exc.DBAPIError, match="cannot be changed or deleted"):
                sql(app, f"{verb} audit_entry ({_COLUMNS}) {_FORGED}")
    with pytest.raises(sa.exc.DBAPIError):  # an upsert is an update, refused on both backends
        sql(
            app,
            f"INSERT INTO audit_entry ({_COLUMNS}) {_FORGED} ON CONFLICT (seq) DO UPDATE SET actor = excluded.actor",
        )
    assert stored(app, 3) == before
    assert verify(app) == chain


def test_the_chain_tip_cannot_be_deleted_rewound_or_replaced(app, world):
    tip = head(app)
    assert tip[0] == verify(app)["checked"] > 3
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "DELETE FROM audit_head")
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "UPDATE audit_head SET seq = 2 WHERE id = 1")
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, 'x')")
    if dialect(app) == "sqlite":
        sql(app, "INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, 0, 'x')")  # quietly skipped
    else:
        with pytest.raises(sa.exc.DBAPIError):
            sql(app, "TRUNCATE audit_head")
    assert head(app) == tip
    append_one(app)  # the application still appends (the tip moves forward) and the chain holds
    assert head(app)[0] == tip[0] + 1
    assert verify(app)["ok"] is True and verify(app)["checked"] == tip[0] + 1


def test_a_fresh_chain_still_gets_its_tip(app):
    from server.store.extensions import db

    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM audit_head")).scalar() == 0
    append_one(app)
    append_one(app)
    assert head(app)[0] == 2 and verify(app)["ok"] is True
