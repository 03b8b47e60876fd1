"""scale indexes: therapy lists newest first, due timers, the task inbox, a therapy's tasks by status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 22:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_therapy_next_due_at'))
        batch_op.drop_index(batch_op.f('ix_therapy_process_key'))
        batch_op.drop_index(batch_op.f('ix_therapy_site_id'))
        batch_op.drop_index(batch_op.f('ix_therapy_status'))
        batch_op.create_index('ix_therapy_created', ['created_at'], unique=False)
        batch_op.create_index('ix_therapy_due', ['status', 'next_due_at', 'id'], unique=False)
        batch_op.create_index('ix_therapy_process_created', ['process_key', 'created_at'], unique=False)
        batch_op.create_index('ix_therapy_site_created', ['site_id', 'created_at'], unique=False)
        batch_op.create_index('ix_therapy_status_created', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_therapy_status_site_created', ['status', 'site_id', 'created_at'], unique=False)

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_status_role')
        batch_op.drop_index(batch_op.f('ix_task_therapy_id'))
        batch_op.create_index('ix_task_inbox', ['status', 'role', 'site_id', sa.text('(due_at IS NULL)'), 'due_at',
                                                'created_at', 'id'], unique=False)
        batch_op.create_index('ix_task_therapy_status', ['therapy_id', 'status'], unique=False)


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_therapy_status')
        batch_op.drop_index('ix_task_inbox')
        batch_op.create_index(batch_op.f('ix_task_therapy_id'), ['therapy_id'], unique=False)
        batch_op.create_index('ix_task_status_role', ['status', 'role'], unique=False)

    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.drop_index('ix_therapy_status_site_created')
        batch_op.drop_index('ix_therapy_status_created')
        batch_op.drop_index('ix_therapy_site_created')
        batch_op.drop_index('ix_therapy_process_created')
        batch_op.drop_index('ix_therapy_due')
        batch_op.drop_index('ix_therapy_created')
        batch_op.create_index(batch_op.f('ix_therapy_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_therapy_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_therapy_process_key'), ['process_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_therapy_next_due_at'), ['next_due_at'], unique=False)
