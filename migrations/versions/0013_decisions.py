"""decisions: the DMN decision tables a process version's business rule tasks evaluate, stored with the version
(file name to the DMN XML as uploaded or shipped in processes/)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 07:00:00.000000

Versions deployed before have no business rule tasks: their column stays empty (null).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('process_definition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decisions', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('process_definition', schema=None) as batch_op:
        batch_op.drop_column('decisions')
