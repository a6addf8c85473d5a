"""Maintenance finds in-flight notifications through an index, not by reading every campaign's rows

Every process runs maintenance once a second: `queued` rows not handed to the broker, `sending`
rows whose sender died, `unknown` rows due for a resend — across all campaigns. The only index on
`state` leads with `campaign_id`, so each of those queries read the whole notification table:
every campaign ever sent, tens of millions of rows for a national operator. On PostgreSQL the new
index holds only rows in those three states (the queries name the state as a literal, so that
prepared plans can use it); SQLite cannot match `state = 'x'` to `state IN (…)`, so there it holds
every row.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

IN_FLIGHT = sa.text("state IN ('queued', 'sending', 'unknown')")


def upgrade() -> None:
    op.create_index('ix_notification_in_flight', 'notification', ['state', 'id'], unique=False,
                    postgresql_where=IN_FLIGHT)


def downgrade() -> None:
    op.drop_index('ix_notification_in_flight', table_name='notification')
