"""case-insensitive account id lookups: an index on lower(account_ref)

Care staff type the operator's account id as the subscriber reads it (`hn-000123` for
`HN-000123`); `history --account` compares lower(account_ref) = lower(:value), which SQLite
(3.9+) and PostgreSQL both answer from this expression index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_account_account_ref_lower', 'account', [sa.text('lower(account_ref)')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_account_account_ref_lower', table_name='account')
