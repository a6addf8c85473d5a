"""Matching pages through a feed's *pending* items: `(feed_id, id)` becomes a partial index

`ix_feed_item_feed_id (feed_id, id)` served one query, matching's read of a feed's pending items
a batch at a time. Every item it indexed stayed in it after its outcome was written, and on
PostgreSQL every outcome written (an update that changes the indexed `account_id`, so never HOT)
added a second entry for the new row version: ~22% of the server's CPU while matching. Indexing
only `status = 'pending'` rows serves the same read (its WHERE names that status), and a written
outcome leaves the index instead of adding to it; a matched feed's entries are gone.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index('ix_feed_item_feed_id', table_name='feed_item')
    op.create_index('ix_feed_item_pending', 'feed_item', ['feed_id', 'id'], unique=False,
                    postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_feed_item_pending', table_name='feed_item')
    op.create_index('ix_feed_item_feed_id', 'feed_item', ['feed_id', 'id'], unique=False)
