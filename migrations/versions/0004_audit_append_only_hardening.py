"""audit trail: no entry replaced in place, the chain's tip neither removed nor moved back

SQLite's ``INSERT OR REPLACE`` (and ``REPLACE INTO``) deletes a conflicting row without firing DELETE
triggers (unless ``recursive_triggers`` is on), so it could swap an audit entry for another with the same
``seq``. A BEFORE INSERT trigger now refuses any insert whose ``seq`` is taken, before the conflict is
resolved. The ``audit_head`` row (the chain's tip) may only move forward: deleting it, replacing it or
moving it back is refused (on PostgreSQL also TRUNCATE), since a lost or rewound tip would make every
later append collide with existing entries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:40:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_SQLITE = (
    "CREATE TRIGGER audit_entry_no_replace BEFORE INSERT ON audit_entry "
    "WHEN EXISTS (SELECT 1 FROM audit_entry WHERE seq = NEW.seq) "
    "BEGIN SELECT RAISE(ABORT, 'audit entries cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain tip cannot be deleted'); END",
    "CREATE TRIGGER audit_head_no_rewind BEFORE UPDATE ON audit_head "
    "WHEN NEW.id IS NOT OLD.id OR NEW.seq < OLD.seq "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain tip only moves forward'); END",
    # The first append creates the tip with INSERT ... ON CONFLICT DO NOTHING: a second insert of the row
    # (including INSERT OR REPLACE) is quietly skipped, as that statement expects; any other row is refused.
    "CREATE TRIGGER audit_head_no_replace BEFORE INSERT ON audit_head "
    "WHEN EXISTS (SELECT 1 FROM audit_head WHERE id = NEW.id) "
    "BEGIN SELECT RAISE(IGNORE); END",
    "CREATE TRIGGER audit_head_single_row BEFORE INSERT ON audit_head WHEN NEW.id IS NOT 1 "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain has one tip row'); END",
)

_POSTGRESQL = (
    "CREATE FUNCTION audit_head_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'the audit chain tip only moves forward and cannot be deleted'; END $$",
    "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
    "FOR EACH ROW EXECUTE FUNCTION audit_head_refuse_change()",
    "CREATE TRIGGER audit_head_no_rewind BEFORE UPDATE ON audit_head "
    "FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.seq < OLD.seq) "
    "EXECUTE FUNCTION audit_head_refuse_change()",
    "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_head_refuse_change()",
    "CREATE TRIGGER audit_head_single_row BEFORE INSERT ON audit_head "
    "FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM 1) EXECUTE FUNCTION audit_head_refuse_change()",
)


def upgrade():
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE if dialect == "sqlite" else _POSTGRESQL if dialect == "postgresql" else ():
        op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("audit_entry_no_replace", "audit_head_no_delete", "audit_head_no_rewind",
                     "audit_head_no_replace", "audit_head_single_row"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for name in ("audit_head_no_delete", "audit_head_no_rewind", "audit_head_no_truncate",
                     "audit_head_single_row"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON audit_head")
        op.execute("DROP FUNCTION IF EXISTS audit_head_refuse_change()")
