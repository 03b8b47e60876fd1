"""the therapy network: the parties of each therapy, each task's party, reason codes

Existing therapies get their site as the treatment party (and so the apheresis party), and the manufacturing site their
process data names (``manufacturing_site``) when it is a registered manufacturing site. Existing tasks belong
to the treatment party (the only one there was). A fresh install gets a starting set of reason codes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 04:00:00.000000

"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# (kind, code, description): what a fresh install offers; administrators add their own.
STARTING_REASON_CODES = [
    ("cancel", "PATIENT_WITHDREW", "The patient withdrew consent"),
    ("cancel", "PATIENT_INELIGIBLE", "The patient is no longer eligible"),
    ("cancel", "PATIENT_DECEASED", "The patient died"),
    ("cancel", "MANUFACTURING_FAILURE", "The product could not be manufactured"),
    ("cancel", "OUT_OF_SPECIFICATION", "The product failed its release specification"),
    ("cancel", "OTHER", "Another reason (say which)"),
    ("hold", "PATIENT_UNWELL", "The patient is not well enough to go on"),
    ("hold", "AWAITING_RESULTS", "Waiting for test results"),
    ("hold", "CAPACITY", "No capacity at a site"),
    ("hold", "LOGISTICS_DELAY", "The courier or a shipment is delayed"),
    ("hold", "OTHER", "Another reason (say which)"),
    ("reschedule", "PATIENT_REQUEST", "The patient asked for another date"),
    ("reschedule", "SITE_CAPACITY", "The site has no capacity on that date"),
    ("reschedule", "MANUFACTURING_DELAY", "Manufacturing is late"),
    ("reschedule", "LOGISTICS_DELAY", "The courier or a shipment is delayed"),
    ("reschedule", "OTHER", "Another reason (say which)"),
    ("reassign", "CAPACITY", "The site has no capacity"),
    ("reassign", "EQUIPMENT_FAILURE", "Equipment at the site failed"),
    ("reassign", "SITE_CLOSED", "The site is closed"),
    ("reassign", "PATIENT_MOVED", "The patient moved to another centre's area"),
    ("reassign", "OTHER", "Another reason (say which)"),
]


def upgrade():
    op.create_table('therapy_party',
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('party', sa.String(length=16), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('therapy_created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], ),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('therapy_id', 'party')
    )
    with op.batch_alter_table('therapy_party', schema=None) as batch_op:
        batch_op.create_index('ix_therapy_party_site', ['site_id', 'therapy_created_at', 'therapy_id'], unique=False)
    reason_code = op.create_table('reason_code',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'code')
    )
    # SQLite's batch mode copies the table and cannot carry an expression index over: there the inbox index
    # is dropped first and made again after (PostgreSQL alters the table in place).
    copied = op.get_bind().dialect.name == 'sqlite'
    if copied:
        op.drop_index('ix_task_inbox', table_name='task')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('party', sa.String(length=16), server_default='treatment', nullable=False))
        batch_op.alter_column('site_id', existing_type=sa.Integer(), nullable=True)
    if copied:
        _create_inbox_index()

    now = datetime.now(UTC)
    op.bulk_insert(reason_code, [
        {"kind": kind, "code": code, "description": text, "active": True, "created_at": now, "created_by": "system"}
        for kind, code, text in STARTING_REASON_CODES
    ])
    _assign_existing_parties(now)


def _assign_existing_parties(now):
    """Treatment: the therapy's site; manufacturing: the registered site its data names."""
    connection = op.get_bind()
    site = sa.table('site', sa.column('id', sa.Integer), sa.column('code', sa.String), sa.column('kind', sa.String))
    therapy = sa.table('therapy', sa.column('id', sa.String), sa.column('site_id', sa.Integer), sa.column('data', sa.JSON),
                       sa.column('created_at', sa.DateTime(timezone=True)))
    party = sa.table('therapy_party', sa.column('therapy_id', sa.String), sa.column('party', sa.String),
                     sa.column('site_id', sa.Integer), sa.column('therapy_created_at', sa.DateTime(timezone=True)),
                     sa.column('assigned_at', sa.DateTime(timezone=True)), sa.column('assigned_by', sa.String))
    manufacturing = {
        code: site_id for site_id, code, kind in connection.execute(sa.select(site.c.id, site.c.code, site.c.kind))
        if kind == 'manufacturing'
    }
    rows = []
    selected = sa.select(therapy.c.id, therapy.c.site_id, therapy.c.data, therapy.c.created_at)
    for therapy_id, site_id, data, created_at in connection.execute(selected):
        row = {"therapy_id": therapy_id, "therapy_created_at": created_at, "assigned_at": now,
               "assigned_by": "migration"}
        rows.append({**row, "party": "treatment", "site_id": site_id})
        named = (data or {}).get('manufacturing_site') if isinstance(data, dict) else None
        if isinstance(named, str) and named.strip().upper() in manufacturing:
            rows.append({**row, "party": "manufacturing", "site_id": manufacturing[named.strip().upper()]})
        if len(rows) >= 1000:
            connection.execute(party.insert(), rows)
            rows = []
    if rows:
        connection.execute(party.insert(), rows)


def _create_inbox_index():
    op.create_index('ix_task_inbox', 'task', ['status', 'role', 'site_id', sa.text('(due_at IS NULL)'), 'due_at',
                                              'created_at', 'id'], unique=False)


def downgrade():
    copied = op.get_bind().dialect.name == 'sqlite'
    if copied:
        op.drop_index('ix_task_inbox', table_name='task')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.alter_column('site_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('party')
    if copied:
        _create_inbox_index()
    op.drop_table('reason_code')
    with op.batch_alter_table('therapy_party', schema=None) as batch_op:
        batch_op.drop_index('ix_therapy_party_site')
    op.drop_table('therapy_party')
