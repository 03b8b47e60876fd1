"""the reschedule reason code RECOLLECTION: the collected material was rejected or lost and the patient is
collected again under the same COI (the bundled autologous diagram rebooks with it)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:00:00.000000

"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

KIND, CODE = 'reschedule', 'RECOLLECTION'
DESCRIPTION = 'The collected material was rejected or lost: the patient is collected again'


def _table():
    return sa.table(
        'reason_code',
        sa.column('kind', sa.String),
        sa.column('code', sa.String),
        sa.column('description', sa.String),
        sa.column('active', sa.Boolean),
        sa.column('created_at', sa.DateTime(timezone=True)),
        sa.column('created_by', sa.String),
    )


def upgrade():
    table = _table()
    connection = op.get_bind()
    present = connection.execute(
        sa.select(table.c.code).where(table.c.kind == KIND, table.c.code == CODE)
    ).first()
    if present is None:  # an administrator may have added it already
        op.bulk_insert(table, [{
            'kind': KIND, 'code': CODE, 'description': DESCRIPTION, 'active': True,
            'created_at': datetime.now(UTC), 'created_by': 'system',
        }])


def downgrade():
    table = _table()
    op.execute(table.delete().where(table.c.kind == KIND, table.c.code == CODE, table.c.created_by == 'system'))
