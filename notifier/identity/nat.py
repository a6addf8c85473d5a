"""Store carrier-grade NAT port blocks (cgnat-csv): which private address used which public port range when.

A feed reports a public address, a source port and a time; behind CGNAT hundreds of subscribers
share that address, and only the NAT's log of port-block allocations says whose packet it was.
This module turns a chunk of alloc/release events into `nat_block` rows in a few statements per
chunk: one read of the blocks the chunk touches, one insert of the new blocks, one update of the
blocks whose end changed. Re-importing a log, or importing logs out of order, gives the same rows.

The end of a block is the earliest of its release and the next allocation of the same public
address and first port (the NAT cannot hand out a port range twice, so a missing release is
implied by the next allocation). A block with neither stays open (`covers_until` = OPEN_END).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from notifier.db import empty_scratch_tables
from notifier.identifiers import stored_ip_key
from notifier.import_result import ImportResult
from notifier.ingest.records import NatEventRecord, Rejection
from notifier.models import OPEN_END, NatBlock, UtcDateTime

ALLOC, RELEASE = "alloc", "release"

Pair = tuple[str, int]  # (public_key, port_start): one port block of one public address
# The port blocks one chunk touches (a temporary table of the connection, emptied per chunk).
_PAIR_TABLE = sa.Table("nat_chunk_pairs", sa.MetaData(), sa.Column("public_key", sa.String(32)),
                       sa.Column("port_start", sa.Integer))


@dataclass
class _Block:
    """A port block as stored (`id` set) or about to be; `stored_end` is its end as read."""

    public_ip: str
    public_key: str
    port_start: int
    port_end: int
    private_ip: str
    private_key: str
    allocated_at: datetime
    released_at: datetime | None
    id: int | None = None
    stored_end: datetime | None = None

    @property
    def pair(self) -> Pair:
        return self.public_key, self.port_start

    def row(self) -> dict[str, object]:
        return {"public_ip": self.public_ip, "public_key": self.public_key, "port_start": self.port_start,
                "port_end": self.port_end, "private_ip": self.private_ip, "private_key": self.private_key,
                "allocated_at": self.allocated_at, "released_at": self.released_at, "open_until": None,
                "covers_until": self.released_at or OPEN_END}

_BLOCK_COLUMNS = ", ".join(f"b.{column.name}" for column in NatBlock.__table__.c)
# Per touched port block: the blocks from the last one allocated before the chunk's earliest event
# (each block ends by the next allocation, so no older one can still run) onwards. CROSS JOIN makes
# SQLite walk the small pair table first and seek uq_nat_block (public_key, port_start,
# allocated_at) for each pair; PostgreSQL plans it as an inner join. Whether the last block before
# still runs is checked in Python: a covers_until term here would lead SQLite to the other index.
_AFFECTED_BLOCKS = sa.text(f"""
    SELECT {_BLOCK_COLUMNS} FROM {_PAIR_TABLE.name} AS p CROSS JOIN nat_block AS b
    WHERE b.public_key = p.public_key AND b.port_start = p.port_start
      AND b.allocated_at >= coalesce((
        SELECT max(q.allocated_at) FROM nat_block AS q
        WHERE q.public_key = p.public_key AND q.port_start = p.port_start AND q.allocated_at < :earliest), :earliest)
""").bindparams(sa.bindparam("earliest", type_=UtcDateTime())).columns(*NatBlock.__table__.c)


def store_nat_events(session: Session, records: list[NatEventRecord], result: ImportResult) -> None:
    """Store one chunk of CGNAT log events; count them in `result`, rejecting a release that has no
    block to end. Safe to call chunk after chunk, file after file, and with a file seen before."""
    if not records:
        return
    timelines = _load_timelines(session, records)
    new_blocks, accepted = _add_allocations(timelines, [r for r in records if r.event == ALLOC], result)
    _end_replaced_blocks(timelines)  # first, so a release after the next allocation finds its block ended
    accepted += _apply_releases(timelines, [r for r in records if r.event == RELEASE], result)
    _write(session, new_blocks, [b for blocks in timelines.values() for b in blocks
                                 if b.id is not None and b.released_at != b.stored_end])
    result.accepted += accepted


def _load_timelines(session: Session, records: list[NatEventRecord]) -> dict[Pair, list[_Block]]:
    """The stored blocks that the chunk's events can affect, grouped by port block.

    Per touched (public_key, port_start): the blocks allocated since the chunk's earliest event,
    and the last one allocated before it, the only older block that can still run at that time
    (each block ends by the next allocation): one index range on uq_nat_block per pair, so neither a
    port block's history nor the hundred thousand blocks a big NAT keeps open is read. The pairs go
    in a temporary table to be joined.
    """
    pairs = {(stored_ip_key(r.public_ip), r.port_start) for r in records}
    earliest = min(r.at for r in records)
    _fill_pair_table(session, pairs)
    timelines: dict[Pair, list[_Block]] = defaultdict(list)
    for row in session.execute(_AFFECTED_BLOCKS, {"earliest": earliest}).mappings():
        if row["covers_until"] < earliest:
            continue
        block = _Block(row["public_ip"], row["public_key"], row["port_start"], row["port_end"], row["private_ip"],
                       row["private_key"], row["allocated_at"], row["released_at"], id=row["id"],
                       stored_end=row["released_at"])
        timelines[block.pair].append(block)
    return timelines


def _fill_pair_table(session: Session, pairs: set[Pair]) -> None:
    """Make the connection's temporary pair table hold exactly `pairs` (SQLite and PostgreSQL alike)."""
    session.execute(sa.text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PAIR_TABLE.name} (public_key VARCHAR(32) "
                            "NOT NULL, port_start INTEGER NOT NULL, PRIMARY KEY (public_key, port_start))"))
    empty_scratch_tables(session.connection(), _PAIR_TABLE.name)
    session.execute(sa.insert(_PAIR_TABLE), [{"public_key": key, "port_start": port} for key, port in pairs])


def _add_allocations(timelines: dict[Pair, list[_Block]], allocs: list[NatEventRecord],
                     result: ImportResult) -> tuple[list[_Block], int]:
    """Put each new allocation on its port block's timeline; one already stored is unchanged, one
    that gives the same block at the same moment to another private address is rejected."""
    new_blocks: list[_Block] = []
    accepted = 0
    for record in allocs:
        block = _Block(record.public_ip, stored_ip_key(record.public_ip), record.port_start, record.port_end,
                       record.private_ip, stored_ip_key(record.private_ip), record.at, None)
        timeline = timelines[block.pair]
        same = next((b for b in timeline if b.allocated_at == block.allocated_at), None)
        if same is None:
            timeline.append(block)
            new_blocks.append(block)
        elif same.private_key != block.private_key:
            result.reject(Rejection(record.line, f"{_name(block)} was allocated at {_when(record.at)} to "
                                                 f"{same.private_ip} already, not to {record.private_ip}", ""))
            continue
        else:
            result.unchanged += 1
        accepted += 1
    return new_blocks, accepted


def _apply_releases(timelines: dict[Pair, list[_Block]], releases: list[NatEventRecord],
                    result: ImportResult) -> int:
    """End each released block at its release, in time order; returns how many releases were used.

    A release ends the latest block of its public address and first port allocated to the same
    private address before it (or, failing that, at the same second: a block released as soon as
    it was given). A release naming a block that ended before it has no block to end.
    """
    accepted = 0
    for record in sorted(releases, key=lambda r: (r.at, r.line)):
        pair, private_key = (stored_ip_key(record.public_ip), record.port_start), stored_ip_key(record.private_ip)
        candidates = [b for b in timelines.get(pair, ()) if b.private_key == private_key and b.allocated_at <= record.at]
        if not candidates:
            result.reject(Rejection(record.line, f"release without an allocation (no block {record.public_ip} "
                                                 f"port {record.port_start} for {record.private_ip} at or "
                                                 f"before {_when(record.at)})", ""))
            continue
        block = max(candidates, key=lambda b: (b.allocated_at < record.at, b.allocated_at))
        if block.released_at is not None and block.released_at < record.at:
            result.reject(Rejection(record.line, f"release without an allocation ({_name(block)} for "
                                                 f"{block.private_ip} allocated at {_when(block.allocated_at)} "
                                                 f"ended at {_when(block.released_at)})", ""))
            continue
        if block.id is not None and block.stored_end == record.at:  # this log was imported before
            result.unchanged += 1
        block.released_at = record.at
        accepted += 1
    return accepted


def _end_replaced_blocks(timelines: dict[Pair, list[_Block]]) -> None:
    """A block ends at the next allocation of the same port block if it was not released before."""
    for timeline in timelines.values():
        timeline.sort(key=lambda b: b.allocated_at)
        for block, following in zip(timeline, timeline[1:], strict=False):
            if block.released_at is None or block.released_at > following.allocated_at:
                block.released_at = following.allocated_at


def _write(session: Session, new_blocks: list[_Block], changed: list[_Block]) -> None:
    """One insert for the new blocks (a block another import stored meanwhile is left alone) and
    one executemany update for the stored blocks whose end moved."""
    table = NatBlock.__table__
    if new_blocks:
        session.execute(_insert_ignoring_duplicates(session, table), [b.row() for b in new_blocks])
    if changed:
        session.execute(
            sa.update(table).where(table.c.id == sa.bindparam("b_id"))
            .values(released_at=sa.bindparam("b_released_at"), covers_until=sa.bindparam("b_covers_until")),
            [{"b_id": b.id, "b_released_at": b.released_at, "b_covers_until": b.released_at or OPEN_END}
             for b in changed])


def _insert_ignoring_duplicates(session: Session, table: sa.Table) -> sa.Insert:
    """INSERT … ON CONFLICT DO NOTHING in the session's dialect (SQLite and PostgreSQL spell it alike)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


def _name(block: _Block) -> str:
    return f"block {block.public_ip} ports {block.port_start}-{block.port_end}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

