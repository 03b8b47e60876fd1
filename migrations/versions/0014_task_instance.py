"""task.instance: for one instance of a multi-instance or loop task, which one it is and the item it works on

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 12:00:00.000000

Tasks made before are no instances: their column stays empty (null).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('instance', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('instance')
