"""an index of the free slots

A site's open slots of a kind that still have a place, in time order (``ix_slot_free``, partial): free slots
(``GET /slots?available=true``, the booking options) are read from it, instead of every slot of the site from its
first, the full past ones included.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 16:50:00.000000

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

FREE = "status = 'open' AND booked < capacity"


def upgrade():
    op.create_index(
        'ix_slot_free',
        'slot',
        ['site_id', 'kind', 'start_at'],
        sqlite_where=sa.text(FREE),
        postgresql_where=sa.text(FREE),
    )


def downgrade():
    op.drop_index('ix_slot_free', table_name='slot')
