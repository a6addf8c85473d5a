"""feed_item.seen_precision: remember that a feed gave only a day

A leak list's `leaked_at` of `2026-11-02` is stored as that day's local midnight; without knowing
it was a date, notices printed "00:00 ngày 02/11/2026", a time nobody gave. "date" marks such
rows; NULL (every earlier row) means a full time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('feed_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seen_precision', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('feed_item', schema=None) as batch_op:
        batch_op.drop_column('seen_precision')
