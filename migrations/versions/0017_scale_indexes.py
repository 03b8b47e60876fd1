"""indexes for the capacity calendar and a therapy's bookings at scale

A site's slots of a kind by their end (``ix_slot_site_kind_end``): a calendar window (``from``, ``to``) asks
for the slots that end after its start, which this index reads from there on, instead of every slot of the
site from its first. A therapy's bookings, all of them (``ix_booking_therapy``): the unique index over the
booked ones alone cannot serve a therapy's history.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 15:45:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_slot_site_kind_end', 'slot', ['site_id', 'kind', 'end_at'])
    op.create_index('ix_booking_therapy', 'booking', ['therapy_id'])


def downgrade():
    op.drop_index('ix_booking_therapy', table_name='booking')
    op.drop_index('ix_slot_site_kind_end', table_name='slot')
