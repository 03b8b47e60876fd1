"""audit trail: one hash chain per therapy plus a "system" chain, and seals over the chains' heads

Appending no longer locks one row for the whole trail: each entry belongs to a chain (its therapy, or
"system" for entries without one) and links to the previous entry of that chain; appending locks only that
chain's head row (``audit_chain_head``). Entries written before keep their hashes and stay the start of the
"system" chain (their ``chain`` and ``chain_seq`` are null, their place is their ``seq``); the old tip row
``audit_head`` becomes the "system" chain's head. A seal (``audit_seal``, its heads in ``audit_seal_head``)
commits a Merkle root over the heads that moved since the previous seal, chained to it by hash.

On PostgreSQL ``audit_entry.seq`` comes from the sequence ``audit_entry_seq`` from now on. Seals are never
changed or deleted, chain heads never move back (the database refuses it, as for the old tip row).

Downgrading restores the old schema with the "system" chain's head as the tip; entries written into therapy
chains since cannot be verified by the older version.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 12:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

_SQLITE = (
    "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head "
    "BEGIN SELECT RAISE(ABORT, 'an audit chain head cannot be deleted'); END",
    "CREATE TRIGGER audit_chain_head_no_rewind BEFORE UPDATE ON audit_chain_head "
    "WHEN NEW.chain IS NOT OLD.chain OR NEW.chain_seq < OLD.chain_seq OR NEW.seq < OLD.seq "
    "OR NEW.sealed_seq < OLD.sealed_seq "
    "BEGIN SELECT RAISE(ABORT, 'an audit chain head only moves forward'); END",
    # A chain's head is created with INSERT ... ON CONFLICT DO NOTHING: a second insert of it (also INSERT OR
    # REPLACE) is quietly skipped, as that statement expects.
    "CREATE TRIGGER audit_chain_head_no_replace BEFORE INSERT ON audit_chain_head "
    "WHEN EXISTS (SELECT 1 FROM audit_chain_head WHERE chain = NEW.chain) "
    "BEGIN SELECT RAISE(IGNORE); END",
    "CREATE TRIGGER audit_seal_no_update BEFORE UPDATE ON audit_seal "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_seal_no_delete BEFORE DELETE ON audit_seal "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_seal_no_replace BEFORE INSERT ON audit_seal "
    "WHEN EXISTS (SELECT 1 FROM audit_seal WHERE id = NEW.id) "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_seal_head_no_update BEFORE UPDATE ON audit_seal_head "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_seal_head_no_delete BEFORE DELETE ON audit_seal_head "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
    "CREATE TRIGGER audit_seal_head_no_replace BEFORE INSERT ON audit_seal_head "
    "WHEN EXISTS (SELECT 1 FROM audit_seal_head WHERE seal_id = NEW.seal_id AND chain = NEW.chain) "
    "BEGIN SELECT RAISE(ABORT, 'audit seals cannot be changed or deleted'); END",
)

_POSTGRESQL = (
    "CREATE FUNCTION audit_chain_head_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'an audit chain head only moves forward and cannot be deleted'; END $$",
    "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head "
    "FOR EACH ROW EXECUTE FUNCTION audit_chain_head_refuse_change()",
    "CREATE TRIGGER audit_chain_head_no_rewind BEFORE UPDATE ON audit_chain_head "
    "FOR EACH ROW WHEN (NEW.chain IS DISTINCT FROM OLD.chain OR NEW.chain_seq < OLD.chain_seq "
    "OR NEW.seq < OLD.seq OR NEW.sealed_seq < OLD.sealed_seq) "
    "EXECUTE FUNCTION audit_chain_head_refuse_change()",
    "CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_refuse_change()",
    "CREATE FUNCTION audit_seal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'audit seals cannot be changed or deleted'; END $$",
    "CREATE TRIGGER audit_seal_no_change BEFORE UPDATE OR DELETE ON audit_seal "
    "FOR EACH ROW EXECUTE FUNCTION audit_seal_refuse_change()",
    "CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_seal "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_seal_refuse_change()",
    "CREATE TRIGGER audit_seal_head_no_change BEFORE UPDATE OR DELETE ON audit_seal_head "
    "FOR EACH ROW EXECUTE FUNCTION audit_seal_refuse_change()",
    "CREATE TRIGGER audit_seal_head_no_truncate BEFORE TRUNCATE ON audit_seal_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_seal_refuse_change()",
)

_OLD_HEAD_SQLITE = (
    "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain tip cannot be deleted'); END",
    "CREATE TRIGGER audit_head_no_rewind BEFORE UPDATE ON audit_head "
    "WHEN NEW.id IS NOT OLD.id OR NEW.seq < OLD.seq "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain tip only moves forward'); END",
    "CREATE TRIGGER audit_head_no_replace BEFORE INSERT ON audit_head "
    "WHEN EXISTS (SELECT 1 FROM audit_head WHERE id = NEW.id) "
    "BEGIN SELECT RAISE(IGNORE); END",
    "CREATE TRIGGER audit_head_single_row BEFORE INSERT ON audit_head WHEN NEW.id IS NOT 1 "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain has one tip row'); END",
)

_OLD_HEAD_POSTGRESQL = (
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
    # Plain ADD COLUMN (no table copy), so audit_entry keeps its rows and its append-only triggers.
    op.add_column('audit_entry', sa.Column('chain', sa.String(length=36), nullable=True))
    op.add_column('audit_entry', sa.Column('chain_seq', _BIG, nullable=True))
    op.create_index('ix_audit_entry_chain', 'audit_entry', ['chain', 'chain_seq'], unique=True)
    op.create_table('audit_chain_head',
    sa.Column('chain', sa.String(length=36), nullable=False),
    sa.Column('chain_seq', _BIG, nullable=False),
    sa.Column('seq', _BIG, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('sealed_seq', _BIG, nullable=False),
    sa.PrimaryKeyConstraint('chain')
    )
    op.create_table('audit_seal',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heads', sa.Integer(), nullable=False),
    sa.Column('root', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_seal_head',
    sa.Column('seal_id', sa.Integer(), nullable=False),
    sa.Column('chain', sa.String(length=36), nullable=False),
    sa.Column('chain_seq', _BIG, nullable=False),
    sa.Column('seq', _BIG, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['seal_id'], ['audit_seal.id']),
    sa.PrimaryKeyConstraint('seal_id', 'chain')
    )
    # The old tip becomes the "system" chain's head: the entries so far are that chain's first ones.
    op.execute(
        "INSERT INTO audit_chain_head (chain, chain_seq, seq, hash, sealed_seq) "
        "SELECT 'system', seq, seq, hash, 0 FROM audit_head WHERE id = 1 AND seq > 0"
    )
    if dialect == "sqlite":
        for name in ("audit_head_no_delete", "audit_head_no_rewind", "audit_head_no_replace", "audit_head_single_row"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for name in ("audit_head_no_delete", "audit_head_no_rewind", "audit_head_no_truncate", "audit_head_single_row"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON audit_head")
        op.execute("DROP FUNCTION IF EXISTS audit_head_refuse_change()")
        op.execute("CREATE SEQUENCE audit_entry_seq")
        op.execute("SELECT setval('audit_entry_seq', (SELECT max(seq) FROM audit_entry)) "
                   "WHERE EXISTS (SELECT 1 FROM audit_entry)")
    op.drop_table('audit_head')
    for statement in _SQLITE if dialect == "sqlite" else _POSTGRESQL if dialect == "postgresql" else ():
        op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("audit_chain_head_no_delete", "audit_chain_head_no_rewind", "audit_chain_head_no_replace",
                     "audit_seal_no_update", "audit_seal_no_delete", "audit_seal_no_replace",
                     "audit_seal_head_no_update", "audit_seal_head_no_delete", "audit_seal_head_no_replace"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for table, names in (
            ("audit_chain_head", ("audit_chain_head_no_delete", "audit_chain_head_no_rewind",
                                  "audit_chain_head_no_truncate")),
            ("audit_seal", ("audit_seal_no_change", "audit_seal_no_truncate")),
            ("audit_seal_head", ("audit_seal_head_no_change", "audit_seal_head_no_truncate")),
        ):
            for name in names:
                op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_chain_head_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS audit_seal_refuse_change()")
        op.execute("DROP SEQUENCE IF EXISTS audit_entry_seq")
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', _BIG, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute(
        "INSERT INTO audit_head (id, seq, hash) SELECT 1, seq, hash FROM audit_chain_head WHERE chain = 'system'"
    )
    for statement in _OLD_HEAD_SQLITE if dialect == "sqlite" else _OLD_HEAD_POSTGRESQL if dialect == "postgresql" else ():
        op.execute(statement)
    op.drop_table('audit_seal_head')
    op.drop_table('audit_seal')
    op.drop_table('audit_chain_head')
    op.drop_index('ix_audit_entry_chain', table_name='audit_entry')
    # A plain DROP COLUMN (no table copy, which would lose audit_entry's triggers on SQLite).
    op.execute("ALTER TABLE audit_entry DROP COLUMN chain_seq")
    op.execute("ALTER TABLE audit_entry DROP COLUMN chain")
