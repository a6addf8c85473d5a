"""Store IP assignment sources: which account used which address when (formats.md, "IP assignments").

The parsers in `notifier.ingest.assignments` decide what is valid; this module persists, in batches.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

from notifier.batching import chunks
from notifier.identifiers import ip_key
from notifier.import_result import ImportResult
from notifier.ingest import get_assignment_parser
from notifier.ingest.records import Rejection, SessionRecord
from notifier.models import OPEN_END, Account, IpAssignment

BATCH_ROWS = 1000


def import_assignments(session: Session, path: Path, *, fmt: str, tz: str) -> ImportResult:
    """Store sessions (who had which IP when), a batch at a time; a session seen again only gains
    its end time, so re-importing a log, or a later log that closes a session, is safe."""
    parser = get_assignment_parser(fmt)
    result = ImportResult()
    for chunk in chunks(parser(path, tz=tz), BATCH_ROWS):
        records = [r for r in chunk if not isinstance(r, Rejection)]
        accounts = _account_ids(session, {r.account_ref for r in records})
        for record in chunk:
            if isinstance(record, Rejection):
                result.reject(record)
            elif record.account_ref not in accounts:
                result.reject(Rejection(record.line, f"unknown account '{record.account_ref}'", ""))
        known = [r for r in records if r.account_ref in accounts]
        _store_sessions(session, known, accounts, fmt)
        result.accepted += len(known)
    result.errors.sort(key=lambda error: int(error["line"]))  # type: ignore[arg-type]
    return result


def _account_ids(session: Session, refs: set[str]) -> dict[str, int]:
    if not refs:
        return {}
    return {ref: account_id for account_id, ref in
            session.execute(sa.select(Account.id, Account.account_ref).where(Account.account_ref.in_(list(refs))))}


def _store_sessions(session: Session, records: list[SessionRecord], accounts: dict[str, int], fmt: str) -> None:
    table = IpAssignment.__table__
    wanted: dict[tuple[int, str, object], SessionRecord] = {
        (accounts[r.account_ref], ip_key(r.ip), r.started_at): r for r in records}
    if not wanted:
        return
    existing = {
        (row.account_id, row.range_start, row.started_at): row
        for row in session.execute(sa.select(table.c.id, table.c.account_id, table.c.range_start, table.c.started_at,
                                             table.c.ended_at)
                                   .where(table.c.account_id.in_({key[0] for key in wanted}),
                                          table.c.range_start.in_({key[1] for key in wanted})))
    }
    inserts = [{"account_id": key[0], "network": r.ip, "range_start": key[1], "range_end": key[1],
                "started_at": r.started_at, "ended_at": r.ended_at, "covers_until": r.ended_at or OPEN_END,
                "source": fmt, "username": r.username}
               for key, r in wanted.items() if key not in existing]
    closes = [{"b_id": existing[key].id, "ended_at": r.ended_at, "covers_until": r.ended_at} for key, r in wanted.items()
              if key in existing and r.ended_at is not None and existing[key].ended_at != r.ended_at]
    if inserts:
        session.execute(sa.insert(table), inserts)
    if closes:
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                        .values(ended_at=sa.bindparam("ended_at"), covers_until=sa.bindparam("covers_until")), closes)
