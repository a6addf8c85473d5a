"""A feed imported from a file is stored with its outcomes (each item written once), and those
outcomes are exactly what `match_feed` gives the same items when they are matched again."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from notifier.db import session_scope
from notifier.identifiers import normalise_identifier
from notifier.identity.matching import match_feed
from notifier.importing import import_feed
from notifier.ingest.feeds import report_identifier
from notifier.models import FeedItem
from tests.factories import add_account, write_csv
from tests.test_matching_rules import SKEW, assign, nat_block

PUBLIC = "113.161.0.9"
HEADER = ["timestamp", "src_ip", "src_port", "infection", "family", "tag"]
Outcomes = list[tuple[int, str, int | None, str | None]]


def _sinkhole(directory: Path) -> Path:
    """Every kind of outcome an address can get, and two rejected lines between them (UTC times)."""
    rows = [
        ["2026-11-20 12:30:00", "14.160.1.2", "40000"],     # HN1 mid-session
        ["2026-11-20 13:00:10", "14.160.1.2", "40000"],     # 10 s after the hand-over: ambiguous
        ["not a time", "14.160.1.2", "40000"],              # rejected
        ["2026-11-20 14:00:00", "14.160.1.2", ""],          # HN2
        ["2026-11-20 12:00:00", "14.160.1.9", ""],          # nobody: unmatched
        ["2026-11-20 12:00:00", "014.160.1.2", ""],         # rejected (leading zero)
        ["2026-11-20 12:00:00", "::ffff:14.160.1.2", ""],   # the same address, IPv4-mapped: HN1
        ["2026-11-20 12:00:00", PUBLIC, "1500"],            # CGNAT → 100.64.0.1 → HN1
        ["2026-11-20 12:00:00", PUBLIC, ""],                # CGNAT, shared, no port: ambiguous
        ["2026-11-20 12:00:00", PUBLIC, "9000"],            # CGNAT, no block holds the port
    ]
    return write_csv(directory / "2026-11-20-event4_sinkhole-vn.csv", HEADER,
                     [[t, ip, port, "sinkhole", "mirai", ""] for t, ip, port in rows])


def _world(session: Session) -> None:
    first = add_account(session, "HN1").id
    second = add_account(session, "HN2", msisdn="+84987654321").id
    assert first is not None and second is not None
    hour = 3600
    assign(session, first, "14.160.1.2", -hour, hour)  # UTC_NOON is 2026-11-20 12:00
    assign(session, second, "14.160.1.2", hour)
    assign(session, first, "100.64.0.1", -hour)
    assign(session, second, "100.64.0.2", -hour)
    nat_block(session, "100.64.0.1", (1024, 2047), -hour)
    nat_block(session, "100.64.0.2", (2048, 3071), -hour)
    session.flush()


def _outcomes(session: Session, feed_id: int | None) -> Outcomes:
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        sa.select(FeedItem.line, FeedItem.status, FeedItem.account_id, FeedItem.reason)
        .where(FeedItem.feed_id == feed_id).order_by(FeedItem.id))]


def _matched_again(session: Session, feed_id: int | None) -> Outcomes:
    """The feed's accepted items set back to pending and matched by `match_feed`."""
    items = FeedItem.__table__
    session.execute(sa.update(items).where(items.c.feed_id == feed_id, items.c.status != "rejected")
                    .values(status="pending", account_id=None, reason=None))
    match_feed(session, feed_id, skew_seconds=SKEW)
    return _outcomes(session, feed_id)


def test_an_imported_feed_is_stored_with_the_outcomes_match_feed_gives(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        _world(session)
        result = import_feed(session, _sinkhole(tmp_path), fmt="shadowserver")
        stored = _outcomes(session, result.id)
        assert [status for _, status, _, _ in stored] == [
            "matched", "ambiguous", "rejected", "matched", "unmatched", "rejected", "matched",
            "matched", "ambiguous", "unmatched"]
        assert (result.accepted, result.rejected) == (8, 2)
        assert result.counts == {"matched": 4, "unmatched": 2, "ambiguous": 2}
        assert _matched_again(session, result.id) == stored


def test_contacts_are_decided_before_they_are_stored_too(database_url: str, tmp_path: Path) -> None:
    leak = write_csv(tmp_path / "leak.csv", ["msisdn", "email", "source"], [
        ["0912345678", "", "combolist"],        # HN1 and HN3 share the number: ambiguous
        ["0987654321", "", "combolist"],        # HN2
        ["0900000000", "anh@example.vn", "combolist"],  # the number nobody has; HN2's e-mail
        ["12", "", "combolist"],                # rejected
    ])
    with session_scope(database_url) as session:
        add_account(session, "HN1")
        add_account(session, "HN2", msisdn="+84987654321", email="anh@example.vn")
        add_account(session, "HN3")
        result = import_feed(session, leak, fmt="leak-csv")
        stored = _outcomes(session, result.id)
        assert [(line, status) for line, status, _, _ in stored] == [
            (2, "ambiguous"), (3, "matched"), (4, "unmatched"), (4, "matched"), (5, "rejected")]
        assert _matched_again(session, result.id) == stored


def test_a_feed_stored_in_many_batches_gets_the_same_outcomes(database_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    feed = _sinkhole(tmp_path)
    with session_scope(database_url) as session:
        _world(session)
        whole = _outcomes(session, import_feed(session, feed, fmt="shadowserver").id)
        monkeypatch.setattr("notifier.importing.STORE_BATCH_ROWS", 3)
        batched = import_feed(session, feed, fmt="shadowserver", again=True)
        assert _outcomes(session, batched.id) == whole
        assert batched.counts == {"matched": 4, "unmatched": 2, "ambiguous": 2}


def test_each_batch_starts_from_empty_scratch_pages_on_postgresql(postgres_url: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Between batches the probe table is truncated, not deleted from: deleted rows stay in its pages
    until a vacuum that never comes inside the import's transaction, and every later batch read them
    all again (a 1-million-row feed matched at 40,000 instead of 127,000 events/s)."""
    from notifier.identity import matching

    sizes: list[int] = []
    cleared = matching._Transport.clear

    def clear_and_measure(transport: matching._Transport) -> None:
        cleared(transport)
        sizes.append(transport.connection.exec_driver_sql("SELECT pg_relation_size('match_probe')").scalar_one())

    monkeypatch.setattr(matching._Transport, "clear", clear_and_measure)
    monkeypatch.setattr("notifier.importing.STORE_BATCH_ROWS", 3)
    with session_scope(postgres_url) as session:
        _world(session)
        result = import_feed(session, _sinkhole(tmp_path), fmt="shadowserver")
    assert result.counts == {"matched": 4, "unmatched": 2, "ambiguous": 2}
    assert len(sizes) >= 3 and set(sizes) == {0}, sizes


@pytest.mark.parametrize("text", [
    "14.160.1.2", "0.0.0.0", "255.255.255.255", " 14.160.1.2", "014.160.1.2", "14.160.1", "256.1.1.1",
    "::ffff:14.160.1.2", "2402:800:6310:5600::1", "14.160.1.2/32", "14.160.1.2%eth0", "", "١٤.١٦٠.١.٢",
])
def test_the_shortcut_for_canonical_ipv4_agrees_with_normalise_identifier(text: str) -> None:
    def outcome(normalise) -> str:  # type: ignore[no-untyped-def]
        try:
            return normalise("ip", text)  # type: ignore[no-any-return]
        except ValueError as exc:
            return f"ValueError: {exc}"

    assert outcome(report_identifier) == outcome(normalise_identifier)


def test_importing_a_feed_leaves_the_pooled_connection_as_it_found_it(database_url: str, tmp_path: Path) -> None:
    """The scratch tables and settings used while a feed's outcomes are decided are gone afterwards."""
    setting = "PRAGMA cache_size" if database_url.startswith("sqlite") else "SELECT current_setting('jit')"
    temporary = "SELECT name FROM sqlite_temp_master" if database_url.startswith("sqlite") else \
        "SELECT relname FROM pg_class WHERE relpersistence = 't'"
    with session_scope(database_url) as session:
        _world(session)
        before = session.execute(sa.text(setting)).scalar()
        assert import_feed(session, _sinkhole(tmp_path), fmt="shadowserver").counts == {
            "matched": 4, "unmatched": 2, "ambiguous": 2}
        assert session.execute(sa.text(setting)).scalar() == before
        assert session.execute(sa.text(temporary)).all() == []
