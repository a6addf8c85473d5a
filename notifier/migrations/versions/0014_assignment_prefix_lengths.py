"""Matching learns the prefix lengths in use from a partial index, not by reading every assignment

Every feed import (and `match_feed`) asks which prefix lengths assignments use, to probe each one.
`SELECT DISTINCT prefix_len` read the whole cover index for that: 10 million entries, seconds per
feed on a cold cache, and the page cache emptied of what matching needed. Almost every row is a
single address (prefix length 128, always probed); the new index holds only the others (static
prefixes, delegated IPv6), so the question costs as many entries as there are network assignments.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

NETWORK_ROWS = sa.text("prefix_len <> 128")


def upgrade() -> None:
    op.create_index('ix_ip_assignment_prefix', 'ip_assignment', ['prefix_len'], unique=False,
                    postgresql_where=NETWORK_ROWS, sqlite_where=NETWORK_ROWS)


def downgrade() -> None:
    op.drop_index('ix_ip_assignment_prefix', table_name='ip_assignment')
