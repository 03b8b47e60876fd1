"""message broker: which outbox events wait to be published to the broker, and the broker messages consumed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('broker_state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('broker_lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('broker_published_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_outbox_broker', ['broker_state', 'therapy_id', 'id'], unique=False)
    op.create_table('broker_message',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('message_id')
    )


def downgrade():
    op.drop_table('broker_message')
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_broker')
        batch_op.drop_column('broker_published_at')
        batch_op.drop_column('broker_lease_until')
        batch_op.drop_column('broker_state')
