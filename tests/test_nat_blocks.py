"""CGNAT port blocks: alloc/release events become nat_block rows, idempotent, across chunks and files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app

from notifier.batching import chunks
from notifier.db import session_scope
from notifier.identity.nat import store_nat_events
from notifier.import_result import ImportResult
from notifier.ingest.nat import parse_cgnat_csv
from notifier.ingest.records import NatEventRecord
from notifier.models import OPEN_END, NatBlock

DATA = Path(__file__).parent / "data" / "identity"
PUBLIC = "203.113.140.5"

Row = tuple[str, int, int, str, datetime, datetime | None, datetime]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def log_events() -> list[NatEventRecord]:
    return [r for r in parse_cgnat_csv(DATA / "cgnat.csv") if isinstance(r, NatEventRecord)]


def store(database_url: str, records: list[NatEventRecord], chunk_size: int | None = None) -> ImportResult:
    result = ImportResult()
    with session_scope(database_url) as session:
        for chunk in chunks(records, chunk_size or max(len(records), 1)):
            store_nat_events(session, chunk, result)
    return result


def blocks(database_url: str) -> list[Row]:
    table = NatBlock.__table__
    with session_scope(database_url) as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            sa.select(table.c.public_ip, table.c.port_start, table.c.port_end, table.c.private_ip,
                      table.c.allocated_at, table.c.released_at, table.c.covers_until)
            .order_by(table.c.public_key, table.c.port_start, table.c.allocated_at))]


# What cgnat.csv says: .10 released and its block given to .13 in the same second; .11's block
# handed to .14 without a release; .12 released at the end; two releases that match no block.
EXPECTED: list[Row] = [
    (PUBLIC, 1024, 2047, "100.64.0.10", utc(2026, 11, 20, 1), utc(2026, 11, 20, 2, 15), utc(2026, 11, 20, 2, 15)),
    (PUBLIC, 1024, 2047, "100.64.0.13", utc(2026, 11, 20, 2, 15), None, OPEN_END),
    (PUBLIC, 2048, 3071, "100.64.0.11", utc(2026, 11, 20, 1, 0, 1), utc(2026, 11, 20, 3), utc(2026, 11, 20, 3)),
    (PUBLIC, 2048, 3071, "100.64.0.14", utc(2026, 11, 20, 3), None, OPEN_END),
    (PUBLIC, 3072, 4095, "100.64.0.12", utc(2026, 11, 20, 1, 0, 2), utc(2026, 11, 20, 5), utc(2026, 11, 20, 5)),
]
EXPECTED_ERRORS = [
    {"line": 8, "reason": "release without an allocation (no block 203.113.140.5 port 3072 for 100.64.0.99 "
                          "at or before 2026-11-20 03:30:00 UTC)"},
    {"line": 9, "reason": "release without an allocation (no block 203.113.140.6 port 1024 for 100.64.0.20 "
                          "at or before 2026-11-20 03:31:00 UTC)"},
]


def test_a_cgnat_log_becomes_port_blocks_and_importing_it_again_changes_nothing(database_url: str) -> None:
    first = store(database_url, log_events())
    assert blocks(database_url) == EXPECTED
    assert (first.accepted, first.rejected, first.unchanged) == (7, 2, 0)
    assert first.errors == EXPECTED_ERRORS

    again = store(database_url, log_events())
    assert blocks(database_url) == EXPECTED
    assert (again.accepted, again.rejected, again.unchanged) == (7, 2, 7)
    assert again.errors == EXPECTED_ERRORS


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunk_boundaries_do_not_change_the_blocks(database_url: str, chunk_size: int) -> None:
    """A release in a later chunk (or a later file) ends the block an earlier one allocated."""
    result = store(database_url, log_events(), chunk_size)
    assert blocks(database_url) == EXPECTED
    assert sorted(e["line"] for e in result.errors) == [8, 9]  # type: ignore[type-var]


def event(line: int, kind: str, at: datetime, private: str, port: int = 1024) -> NatEventRecord:
    return NatEventRecord(line, kind, at, private, PUBLIC, port, port + 1023)


def test_logs_imported_out_of_order_give_the_same_blocks(database_url: str) -> None:
    """Tomorrow's log first: its allocation still ends the block today's log leaves open."""
    today = [event(2, "alloc", utc(2026, 11, 20, 1), "100.64.0.10")]
    tomorrow = [event(2, "alloc", utc(2026, 11, 21, 1), "100.64.0.20"),
                event(3, "release", utc(2026, 11, 21, 2), "100.64.0.20")]
    store(database_url, tomorrow)
    store(database_url, today)
    assert [(b[3], b[5]) for b in blocks(database_url)] == [
        ("100.64.0.10", utc(2026, 11, 21, 1)), ("100.64.0.20", utc(2026, 11, 21, 2))]


def test_a_late_release_ends_a_block_earlier_but_never_reopens_one(database_url: str) -> None:
    store(database_url, [event(2, "alloc", utc(2026, 11, 20, 1), "100.64.0.10"),
                         event(3, "alloc", utc(2026, 11, 20, 5), "100.64.0.11")])
    assert blocks(database_url)[0][5] == utc(2026, 11, 20, 5)  # implied by the next allocation
    late = store(database_url, [event(4, "release", utc(2026, 11, 20, 3), "100.64.0.10"),
                                event(5, "release", utc(2026, 11, 20, 6), "100.64.0.10")])
    assert [b[5] for b in blocks(database_url)] == [utc(2026, 11, 20, 3), None]
    assert late.errors == [{"line": 5, "reason": "release without an allocation (block 203.113.140.5 ports "
                                                  "1024-2047 for 100.64.0.10 allocated at 2026-11-20 01:00:00 UTC "
                                                  "ended at 2026-11-20 03:00:00 UTC)"}]


def test_the_same_block_given_to_two_addresses_at_once_is_refused(database_url: str) -> None:
    result = store(database_url, [event(2, "alloc", utc(2026, 11, 20, 1), "100.64.0.10"),
                                  event(3, "alloc", utc(2026, 11, 20, 1), "100.64.0.11")])
    assert [b[3] for b in blocks(database_url)] == ["100.64.0.10"]
    assert result.errors == [{"line": 3, "reason": "block 203.113.140.5 ports 1024-2047 was allocated at "
                                                   "2026-11-20 01:00:00 UTC to 100.64.0.10 already, not to 100.64.0.11"}]


def test_blocks_of_other_ports_and_addresses_are_independent(database_url: str) -> None:
    store(database_url, [event(2, "alloc", utc(2026, 11, 20, 1), "100.64.0.10", port=1024),
                         event(3, "alloc", utc(2026, 11, 20, 2), "100.64.0.11", port=2048),
                         NatEventRecord(4, "alloc", utc(2026, 11, 20, 3), "100.64.0.12", "203.113.140.6", 1024, 2047)])
    assert [b[5] for b in blocks(database_url)] == [None, None, None]


def test_notifier_assignments_import_cgnat_csv(cli_db: str) -> None:
    """End to end through the command: the --json document names each bad line, blocks are stored."""
    first = CliRunner().invoke(app, ["assignments", "import", str(DATA / "cgnat.csv"), "--format", "cgnat-csv", "--json"])
    assert first.exit_code == 0, first.output
    document = json.loads(first.stdout)
    assert (document["accepted"], document["rejected"]) == (7, 6)
    assert [error["line"] for error in document["errors"]] == [8, 9, 10, 11, 12, 13]
    assert blocks(cli_db) == EXPECTED
    again = CliRunner().invoke(app, ["assignments", "import", str(DATA / "cgnat.csv"), "--format", "cgnat-csv", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["accepted"] == 7
    assert blocks(cli_db) == EXPECTED
