"""The audit trail is append-only in the database itself, also against SQLite's REPLACE, a rewound chain head and
a changed seal."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ..support.audit_split import verified


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


def head(app, chain="system"):
    """(chain_seq, hash) of a chain's head."""
    from server.store.extensions import db

    with app.app_context():
        return tuple(
            db.session.execute(
                sa.text("SELECT chain_seq, hash FROM audit_chain_head WHERE chain = :c"), {"c": chain}
            ).one()
        )


def verify(app):
    """The chain's verification verdict (one pass; the trail split into ranges must give the same)."""
    return verified(app)


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


def test_a_chain_head_cannot_be_deleted_rewound_or_replaced(app, world):
    tip = head(app)
    assert tip[0] == verify(app)["checked"] > 3  # the world's entries are all system ones
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "DELETE FROM audit_chain_head")
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "UPDATE audit_chain_head SET chain_seq = 2 WHERE chain = 'system'")
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "UPDATE audit_chain_head SET chain = 'other' WHERE chain = 'system'")
    if dialect(app) == "sqlite":  # quietly skipped
        sql(
            app,
            "INSERT OR REPLACE INTO audit_chain_head (chain, chain_seq, seq, hash, sealed_seq) "
            "VALUES ('system', 0, 0, 'x', 0)",
        )
    else:
        with pytest.raises(sa.exc.DBAPIError):
            sql(app, "TRUNCATE audit_chain_head")
    assert head(app) == tip
    append_one(app)  # the application still appends (the head moves forward) and the chain holds
    assert head(app)[0] == tip[0] + 1
    assert verify(app)["ok"] is True and verify(app)["checked"] == tip[0] + 1


def test_a_head_without_its_entries_is_named(app, world):
    """A head row added behind the server's back for a chain with no entries reads as that chain's entries lost."""
    sql(
        app,
        "INSERT INTO audit_chain_head (chain, chain_seq, seq, hash, sealed_seq) VALUES ('ghost', 1, 999, :h, 0)",
        params={"h": "1" * 64},
    )
    answer = verify(app)
    assert answer["ok"] is False and (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == ("ghost", 1)


def test_seals_cannot_be_changed_deleted_or_replaced(app, world):
    from server.store import audit

    with app.app_context():
        sealed = audit.seal()
    assert sealed["seal"] == 1 and sealed["heads"] == 1
    with app.app_context():
        assert audit.seal() is None  # nothing moved since
    for statement in (
        "UPDATE audit_seal SET root = 'x'",
        "DELETE FROM audit_seal",
        "UPDATE audit_seal_head SET hash = 'x'",
        "DELETE FROM audit_seal_head",
        "UPDATE audit_chain_head SET sealed_seq = 0",
    ):
        with pytest.raises(sa.exc.DBAPIError):
            sql(app, statement)
    if dialect(app) == "sqlite":
        with pytest.raises(sa.exc.DBAPIError, match="cannot be changed or deleted"):
            sql(app, "INSERT OR REPLACE INTO audit_seal SELECT id, at, heads, 'x', prev_hash, hash FROM audit_seal")
    else:
        for table in ("audit_seal", "audit_seal_head"):
            with pytest.raises(sa.exc.DBAPIError):
                sql(app, f"TRUNCATE {table} CASCADE")
    assert verify(app)["ok"] is True and verify(app)["seals"] == 1


def test_a_fresh_chain_still_gets_its_head(app):
    from server.store.extensions import db

    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM audit_chain_head")).scalar() == 0
    append_one(app)
    append_one(app)
    assert head(app)[0] == 2 and verify(app)["ok"] is True
