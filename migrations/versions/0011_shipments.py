"""shipments: a courier's shipments of a therapy's material and the positions it reports

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('shipment',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('carrier', sa.String(length=100), nullable=False),
    sa.Column('tracking_number', sa.String(length=100), nullable=False),
    sa.Column('from_party', sa.String(length=200), nullable=False),
    sa.Column('to_party', sa.String(length=200), nullable=False),
    sa.Column('expected_arrival', sa.DateTime(timezone=True), nullable=True),
    sa.Column('temperature_min_c', sa.Float(), nullable=True),
    sa.Column('temperature_max_c', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_shipment_therapy_created', 'shipment', ['therapy_id', 'created_at'], unique=False)
    op.create_table('shipment_position',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shipment_id', sa.String(length=36), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('latitude', sa.Float(), nullable=False),
    sa.Column('longitude', sa.Float(), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    op.create_index('ix_shipment_position_time', 'shipment_position', ['shipment_id', 'recorded_at'], unique=False)


def downgrade():
    op.drop_index('ix_shipment_position_time', table_name='shipment_position')
    op.drop_table('shipment_position')
    op.drop_index('ix_shipment_therapy_created', table_name='shipment')
    op.drop_table('shipment')
