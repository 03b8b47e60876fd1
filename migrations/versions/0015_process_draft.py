"""process_draft: diagrams being designed in the studio, saved and checked before they are deployed

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 12:40:00.000000

A draft is never run and never shown to site staff; deploying it makes a process definition version.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'process_draft',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('bpmn_xml', sa.Text(), nullable=False),
        sa.Column('forms', sa.JSON(), nullable=False),
        sa.Column('decisions', sa.JSON(), nullable=True),
        sa.Column('based_on_key', sa.String(length=200), nullable=True),
        sa.Column('based_on_version', sa.Integer(), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_by', sa.String(length=64), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade():
    op.drop_table('process_draft')
