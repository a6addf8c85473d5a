"""Assignment import: one B-tree insert per row fewer, twice over

Importing assignments spent most of its database time maintaining indexes, every row landing at a
random page of each: the table, `ix_ip_assignment_cover` (matching), `uq_ip_assignment` and
`ix_ip_assignment_session_ref`.

- `uq_ip_assignment (range_start, started_at, account_id)` is dropped. The importer finds the rows
  a batch may repeat through the cover index (an interval always covers its own start, so a stored
  row with the same address and start has `covers_until >= started_at`), updates those and inserts
  the rest, as its `INSERT … ON CONFLICT` did; imports are serialized (SQLite has one writer,
  PostgreSQL takes a transaction-level advisory lock), so no second writer can slip a duplicate
  between the check and the insert.
- `ix_ip_assignment_session_ref` indexes only rows that have a session id (RADIUS): sessions-csv
  and static-csv rows have none and no query looks them up by it.

Measured (`bench/matching.py`, SQLite, 1 M records): see the README's "Benchmarks".

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

HAS_SESSION_REF = sa.text("session_ref IS NOT NULL")


def upgrade() -> None:
    op.drop_index('ix_ip_assignment_session_ref', table_name='ip_assignment')
    with op.batch_alter_table('ip_assignment', schema=None) as batch_op:
        batch_op.drop_constraint('uq_ip_assignment', type_='unique')
    op.create_index('ix_ip_assignment_session_ref', 'ip_assignment', ['session_ref'], unique=False,
                    postgresql_where=HAS_SESSION_REF, sqlite_where=HAS_SESSION_REF)


def downgrade() -> None:
    op.drop_index('ix_ip_assignment_session_ref', table_name='ip_assignment')
    with op.batch_alter_table('ip_assignment', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_ip_assignment', ['range_start', 'started_at', 'account_id'])
    op.create_index('ix_ip_assignment_session_ref', 'ip_assignment', ['session_ref'], unique=False)
