"""phase: a therapy's phase of the journey, when its cells were collected and its product infused, and the
control tower's indexes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00.000000

The collection and infusion times of the therapies already stored are read from their completed tasks, as
the record's vein-to-vein clock reads them; their phase is set at their next step.
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


class UtcDateTime(sa.types.TypeDecorator):
    """A timestamp stored in UTC (naive on SQLite) and read back timezone-aware, as the models store them."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == 'sqlite' else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('collected_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('infused_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        'ix_therapy_tower', 'therapy',
        ['status', 'phase', 'next_due_at', 'created_at', 'site_id', 'process_key', 'id', 'coi', 'patient_reference'],
        unique=False,
    )
    op.create_index('ix_task_ready_due', 'task', ['status', 'therapy_id', 'due_at'], unique=False)
    _backfill_vein_to_vein()


def _moment(value):
    """A timestamp a form recorded (ISO 8601 text), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _is_collection(activity_id, form, data):
    """A completed collection, by the record's rule at this revision (server/compliance/record.py)."""
    if "din" in data or "collection_completed_at" in data:
        return True
    names = f"{activity_id} {form or ''}".lower()
    return ("apheresis" in names or "collect" in names) and "recollect" not in names


def _backfill_vein_to_vein():
    """collected_at (the last collection) and infused_at (the first infusion recorded) of the stored therapies,
    from their completed tasks in completion order, as the record's vein-to-vein clock reads them."""
    bind = op.get_bind()
    task = sa.table(
        'task', sa.column('therapy_id'), sa.column('activity_id'), sa.column('form'), sa.column('data', sa.JSON),
        sa.column('status'), sa.column('completed_at', UtcDateTime()),
    )
    therapy = sa.table(
        'therapy', sa.column('id'), sa.column('collected_at', UtcDateTime()), sa.column('infused_at', UtcDateTime())
    )
    rows = bind.execute(
        sa.select(task.c.therapy_id, task.c.activity_id, task.c.form, task.c.data, task.c.completed_at)
        .where(task.c.status == 'completed')
        .order_by(task.c.therapy_id, task.c.completed_at)
    ).all()
    found = {}
    for row in rows:
        data = row.data if isinstance(row.data, dict) else {}
        collected, infused = found.get(row.therapy_id, (None, None))
        if _is_collection(row.activity_id, row.form, data):
            collected = _moment(data.get("collection_completed_at")) or row.completed_at
        infused = infused or _moment(data.get("infusion_started_at"))
        found[row.therapy_id] = (collected, infused)
    for therapy_id, (collected, infused) in found.items():
        if collected is not None or infused is not None:
            bind.execute(
                therapy.update().where(therapy.c.id == therapy_id).values(collected_at=collected, infused_at=infused)
            )


def downgrade():
    op.drop_index('ix_task_ready_due', table_name='task')
    op.drop_index('ix_therapy_tower', table_name='therapy')
    with op.batch_alter_table('therapy', schema=None) as batch_op:
        batch_op.drop_column('infused_at')
        batch_op.drop_column('collected_at')
        batch_op.drop_column('phase')
