"""inbound_message: subscribers' SMS replies (MO deliver_sm), matched to account and notification

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from notifier.models import UtcDateTime


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'inbound_message',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('destination', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('data_coding', sa.Integer(), nullable=False),
        sa.Column('parts', sa.Integer(), nullable=False),
        sa.Column('parts_expected', sa.Integer(), nullable=False),
        sa.Column('opt_out', sa.Boolean(), nullable=False),
        sa.Column('received_at', UtcDateTime(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('notification_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['account.id']),
        sa.ForeignKeyConstraint(['notification_id'], ['notification.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_inbound_message_source', 'inbound_message', ['source', 'received_at'], unique=False)
    op.create_index(op.f('ix_inbound_message_account_id'), 'inbound_message', ['account_id'], unique=False)
    op.create_index(op.f('ix_inbound_message_notification_id'), 'inbound_message', ['notification_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_inbound_message_notification_id'), table_name='inbound_message')
    op.drop_index(op.f('ix_inbound_message_account_id'), table_name='inbound_message')
    op.drop_index('ix_inbound_message_source', table_name='inbound_message')
    op.drop_table('inbound_message')
