"""alerts incidents signatures corrections custody conditions webhooks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:16:20.075037

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('webhook_subscription',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('webhook_delivery',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('outbox_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('response_excerpt', sa.String(length=500), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['outbox_event_id'], ['outbox_event.id'], ),
    sa.ForeignKeyConstraint(['subscription_id'], ['webhook_subscription.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'outbox_event_id')
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_delivery_subscription_id'), ['subscription_id'], unique=False)

    op.create_table('alert',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=True),
    sa.Column('activity_id', sa.String(length=200), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_by', sa.String(length=64), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledgement_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], ),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_site_id'), ['site_id'], unique=False)
        batch_op.create_index('ix_alert_status_raised', ['status', 'raised_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_alert_therapy_id'), ['therapy_id'], unique=False)

    op.create_table('condition_reading',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('sensor_id', sa.String(length=100), nullable=False),
    sa.Column('shipment_id', sa.String(length=100), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('temperature_c', sa.Float(), nullable=False),
    sa.Column('excursion', sa.Boolean(), nullable=False),
    sa.Column('activity_id', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('condition_reading', schema=None) as batch_op:
        batch_op.create_index('ix_reading_therapy_time', ['therapy_id', 'recorded_at'], unique=False)

    op.create_table('correction',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('old_value', sa.JSON(), nullable=True),
    sa.Column('new_value', sa.JSON(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('corrected_by', sa.String(length=64), nullable=False),
    sa.Column('corrected_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('correction', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_correction_therapy_id'), ['therapy_id'], unique=False)

    op.create_table('custody_transfer',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('material_id', sa.String(length=100), nullable=False),
    sa.Column('from_party', sa.String(length=200), nullable=False),
    sa.Column('to_party', sa.String(length=200), nullable=False),
    sa.Column('location', sa.String(length=200), nullable=True),
    sa.Column('scanned_coi', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('custody_transfer', schema=None) as batch_op:
        batch_op.create_index('ix_custody_therapy_time', ['therapy_id', 'occurred_at'], unique=False)

    op.create_table('incident',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('activity_id', sa.String(length=200), nullable=True),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('error_type', sa.String(length=100), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('resolution_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], ),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incident_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_incident_therapy_id'), ['therapy_id'], unique=False)

    op.create_table('signature',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('therapy_id', sa.String(length=36), nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('signer_id', sa.Integer(), nullable=False),
    sa.Column('signer_username', sa.String(length=64), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('meaning', sa.String(length=32), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['signer_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['therapy_id'], ['therapy.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signature_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_signature_therapy_id'), ['therapy_id'], unique=False)



def downgrade():
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signature_therapy_id'))
        batch_op.drop_index(batch_op.f('ix_signature_task_id'))

    op.drop_table('signature')
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_therapy_id'))
        batch_op.drop_index(batch_op.f('ix_incident_status'))

    op.drop_table('incident')
    with op.batch_alter_table('custody_transfer', schema=None) as batch_op:
        batch_op.drop_index('ix_custody_therapy_time')

    op.drop_table('custody_transfer')
    with op.batch_alter_table('correction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_correction_therapy_id'))

    op.drop_table('correction')
    with op.batch_alter_table('condition_reading', schema=None) as batch_op:
        batch_op.drop_index('ix_reading_therapy_time')

    op.drop_table('condition_reading')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_therapy_id'))
        batch_op.drop_index('ix_alert_status_raised')
        batch_op.drop_index(batch_op.f('ix_alert_site_id'))

    op.drop_table('alert')
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_subscription_id'))
        batch_op.drop_index('ix_delivery_due')

    op.drop_table('webhook_delivery')
    op.drop_table('webhook_subscription')
