"""notification.enqueued_at and campaign.ends_at: the database re-drives the broker; outages end

`notification.enqueued_at` is when a row's id was last handed to the broker. A row still `queued`
long after that has lost its broker message (a Redis restart, a message that ran out of retries)
and maintenance hands it over again. NULL (every earlier row) counts as long ago.

`campaign.ends_at` (optional) bounds how long a run waits for a route that went down.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from notifier.models import UtcDateTime


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enqueued_at', UtcDateTime(), nullable=True))
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ends_at', UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('ends_at')
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_column('enqueued_at')
