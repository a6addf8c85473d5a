"""Identity sources: bounded open sessions, RADIUS session ids, CGNAT port blocks, AIS request ids

`ip_assignment.open_until` bounds an open session whose source says how long it may last (a
RADIUS session without a Stop); `ip_assignment.session_ref` lets a later Stop close it. `nat_block`
holds carrier-grade NAT port blocks. `feed.request_id` makes an Authority request idempotent and
`feed.details` keeps its reference, deadline, threat and segment. `covers_until` (the end used for
matching: ended_at, else open_until, else OPEN_END) replaces the start-ordered lookup index, so a
lookup reads only intervals that end after the event; the unique key leads with the address.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

from notifier.models import OPEN_END, UtcDateTime


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ip_assignment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('open_until', UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column('session_ref', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('covers_until', UtcDateTime(), nullable=True))
    ip_assignment = sa.table('ip_assignment', sa.column('ended_at', UtcDateTime()),
                             sa.column('covers_until', UtcDateTime()))
    op.execute(ip_assignment.update().values(
        covers_until=sa.func.coalesce(ip_assignment.c.ended_at, sa.literal(OPEN_END, UtcDateTime()))))
    with op.batch_alter_table('ip_assignment', schema=None) as batch_op:
        batch_op.alter_column('covers_until', existing_type=UtcDateTime(), nullable=False)
        batch_op.drop_index('ix_ip_assignment_lookup')
        batch_op.drop_index('ix_ip_assignment_account_id')
        batch_op.drop_constraint('uq_ip_assignment', type_='unique')
        batch_op.create_unique_constraint('uq_ip_assignment', ['range_start', 'started_at', 'account_id'])
        batch_op.create_index('ix_ip_assignment_cover', ['range_start', 'covers_until'], unique=False)
        batch_op.create_index(batch_op.f('ix_ip_assignment_session_ref'), ['session_ref'], unique=False)
    op.create_table(
        'nat_block',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('public_ip', sa.String(length=64), nullable=False),
        sa.Column('public_key', sa.String(length=32), nullable=False),
        sa.Column('port_start', sa.Integer(), nullable=False),
        sa.Column('port_end', sa.Integer(), nullable=False),
        sa.Column('private_ip', sa.String(length=64), nullable=False),
        sa.Column('private_key', sa.String(length=32), nullable=False),
        sa.Column('allocated_at', UtcDateTime(), nullable=False),
        sa.Column('released_at', UtcDateTime(), nullable=True),
        sa.Column('open_until', UtcDateTime(), nullable=True),
        sa.Column('covers_until', UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('public_key', 'port_start', 'allocated_at', name='uq_nat_block'),
    )
    op.create_index('ix_nat_block_cover', 'nat_block', ['public_key', 'covers_until'], unique=False)
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('details', sa.Text(), nullable=True))
        batch_op.create_unique_constraint('uq_feed_request_id', ['request_id'])


def downgrade() -> None:
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.drop_constraint('uq_feed_request_id', type_='unique')
        batch_op.drop_column('details')
        batch_op.drop_column('request_id')
    op.drop_index('ix_nat_block_cover', table_name='nat_block')
    op.drop_table('nat_block')
    with op.batch_alter_table('ip_assignment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ip_assignment_session_ref'))
        batch_op.drop_index('ix_ip_assignment_cover')
        batch_op.drop_constraint('uq_ip_assignment', type_='unique')
        batch_op.create_unique_constraint('uq_ip_assignment', ['account_id', 'range_start', 'started_at'])
        batch_op.create_index('ix_ip_assignment_account_id', ['account_id'], unique=False)
        batch_op.create_index('ix_ip_assignment_lookup', ['range_start', 'started_at'], unique=False)
        batch_op.drop_column('covers_until')
        batch_op.drop_column('session_ref')
        batch_op.drop_column('open_until')
