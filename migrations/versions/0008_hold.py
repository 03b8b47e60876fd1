"""hold and resume: when a therapy was held, why, and the messages that came while it was held

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('hold_reason_code', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('held_messages', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.drop_column('held_messages')
        batch_op.drop_column('hold_reason_code')
        batch_op.drop_column('held_at')
