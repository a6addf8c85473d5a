"""Resends after `unknown` are counted from a partial index, not by joining every event of a campaign

`campaign status` (and `campaign run`, which polls it once a second) counts how often a campaign's
rows were sent again after being `unknown`: events `unknown → queued`. The count joined every
delivery event of the campaign, four or more per notification: 80,000 rows for a 20,000-row
campaign, 40 million for a national one, on every poll. Such events are rare (one per resend), so
an index of only those rows makes the count proportional to the resends; the query names the two
states as literals so that PostgreSQL can prove the index applies to every plan, prepared or not.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

RESENT = sa.text("from_state = 'unknown' AND to_state = 'queued'")


def upgrade() -> None:
    op.create_index('ix_delivery_event_resent', 'delivery_event', ['notification_id'], unique=False,
                    postgresql_where=RESENT, sqlite_where=RESENT)


def downgrade() -> None:
    op.drop_index('ix_delivery_event_resent', table_name='delivery_event')
