"""Which warning tells a feed item, found from the item

`notification_item`'s key leads with the notification, which serves "the events this warning
tells". A follow-up campaign (`campaign create --untold`) asks the other way round for every
matched item of a feed: does any warning tell or hold it yet? Without an index on the item that
is a scan of every link ever written, once per item.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_notification_item_feed_item', 'notification_item', ['feed_item_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_notification_item_feed_item', table_name='notification_item')
