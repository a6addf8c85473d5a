"""smpp_session: which SMPP binds were alive when, so an `unknown` SMS is resent only after the
SMSC could hand over the receipts it kept

`message_part.provider_message_id` already has its index (`ix_message_part_provider_id`, channel +
id, from 0001); the receipt lookup is made to use it on PostgreSQL by its query shape
(`notifier.dispatch.receipt_batch`), not by a new index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from notifier.models import UtcDateTime


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'smpp_session',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('system_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('bound_at', UtcDateTime(), nullable=False),
        sa.Column('alive_at', UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_smpp_session_alive_at', 'smpp_session', ['alive_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_smpp_session_alive_at', table_name='smpp_session')
    op.drop_table('smpp_session')
