"""Pending receipts by the message id they name

A receipt that beats the record of its send (on a fast SMSC most do) was stored pending and read
by the receipt applier again and again until the record committed: a batch is recorded once its
last answer is in, so the first messages' receipts waited up to a batch's sending time, each
retry a read, and the last batch's receipts kept a campaign from ending for up to a second after
its last submit. Now, on SQLite, the record of a batch applies, in its own transaction, the
pending receipts that name its message ids; this partial index finds them (only pending rows are
in it). PostgreSQL leaves them to the applier (receipt_batch.apply_receipts_that_came_first says
why) and has no use for the index.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

PENDING = sa.text("applied_at IS NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index('ix_inbound_receipt_pending_message', 'inbound_receipt', ['provider_message_id'],
                        unique=False, sqlite_where=PENDING)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index('ix_inbound_receipt_pending_message', table_name='inbound_receipt')
