"""A receipt that cannot be placed yet waits before it is read again

An applier reads pending receipts oldest first, a bounded number per pass. Receipts no message of
ours matches (another system's on a shared SMSC account, an earlier attempt's parts) stay pending
for a day before they become orphans, and every pass read all of them again: past ten thousand,
a pass never reached the receipts behind them, which could be applied. Now a receipt tried and not
placed gets a `retry_at` that grows with its age, and the index holds only pending receipts, by
the time they are due (`retry_at`, else `received_at`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from notifier.models import UtcDateTime


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

PENDING = sa.text("applied_at IS NULL")


def upgrade() -> None:
    op.add_column('inbound_receipt', sa.Column('retry_at', UtcDateTime(), nullable=True))
    op.drop_index('ix_inbound_receipt_pending', table_name='inbound_receipt')
    op.create_index('ix_inbound_receipt_due', 'inbound_receipt', [sa.text('coalesce(retry_at, received_at)')],
                    unique=False, sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_inbound_receipt_due', table_name='inbound_receipt')
    op.create_index('ix_inbound_receipt_pending', 'inbound_receipt', ['applied_at', 'received_at'], unique=False)
    with op.batch_alter_table('inbound_receipt') as batch_op:
        batch_op.drop_column('retry_at')
