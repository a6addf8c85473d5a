"""Matching rules at ISP scale: clock skew, hand-over ambiguity, prefixes, bounded open sessions,
CGNAT port blocks, set-based batches, and the same outcomes on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.db import session_scope
from notifier.identifiers import ip_key, mapped_prefix_len, network_keys
from notifier.identity.matching import Sighting, match_feed, resolve_ips
from notifier.importing import import_assignments, import_feed, import_subscribers
from notifier.models import OPEN_END, Account, Feed, FeedItem, IpAssignment, NatBlock
from tests.factories import UTC_NOON, add_account, write_csv

SKEW = 60
PUBLIC = "113.161.0.9"
SHARED_RANGE = "14.160.0.0/16"


def at(seconds: float) -> datetime:
    return UTC_NOON + timedelta(seconds=seconds)


def assign(session: Session, account_id: int, network: str, start: float, end: float | None = None, *,
           open_until: float | None = None) -> None:
    """An assignment from `start` to `end` seconds after UTC_NOON (None = open)."""
    if "/" in network:
        (range_start, range_end), prefix_len = network_keys(network), mapped_prefix_len(network)
    else:
        range_start = range_end = ip_key(network)
        prefix_len = 128
    ended_at = None if end is None else at(end)
    bound = None if open_until is None else at(open_until)
    session.add(IpAssignment(account_id=account_id, network=network, range_start=range_start, range_end=range_end,
                             prefix_len=prefix_len, started_at=at(start), ended_at=ended_at, open_until=bound,
                             covers_until=ended_at or bound or OPEN_END))


def nat_block(session: Session, private_ip: str, ports: tuple[int, int], start: float, end: float | None = None,
              *, public_ip: str = PUBLIC) -> None:
    released = None if end is None else at(end)
    session.add(NatBlock(public_ip=public_ip, public_key=ip_key(public_ip), port_start=ports[0], port_end=ports[1],
                         private_ip=private_ip, private_key=ip_key(private_ip), allocated_at=at(start),
                         released_at=released, covers_until=released or OPEN_END))


def outcome_of(session: Session, ip: str, seconds: float, port: int | None = None) -> tuple[str, int | None, str | None]:
    """One event through the whole feed path: stored pending, matched by `match_feed`, read back."""
    feed = Feed(format="shadowserver", filename="test.csv", file_sha256="0" * 64)
    session.add(feed)
    session.flush()
    item = FeedItem(feed_id=feed.id, line=2, status="pending", kind="infected_device", identifier_kind="ip",
                    identifier=ip, port=port, seen_at=at(seconds))
    session.add(item)
    session.flush()
    match_feed(session, feed.id, skew_seconds=SKEW)
    row = session.execute(sa.select(FeedItem.status, FeedItem.account_id, FeedItem.reason)
                          .where(FeedItem.id == item.id)).one()
    return row.status, row.account_id, row.reason


def two_accounts(session: Session) -> tuple[int, int]:
    return add_account(session, "HN1").id, add_account(session, "HN2", msisdn=None).id  # type: ignore[return-value]


# --- time and skew ------------------------------------------------------------------------------


def test_an_event_seconds_after_the_recorded_end_still_matches(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, _ = two_accounts(session)
        assign(session, first, "14.160.1.2", 0, 3600)
        session.flush()
        assert outcome_of(session, "14.160.1.2", 3610) == ("matched", first, None)
        assert outcome_of(session, "14.160.1.2", 3600 + SKEW) == (
            "unmatched", None, "no account held this IP address at that time")  # the widened end is open


def test_an_event_seconds_before_a_hand_over_is_ambiguous_and_mid_session_is_matched(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        assign(session, first, "14.160.1.2", 0, 3600)
        assign(session, second, "14.160.1.2", 3600)
        session.flush()
        assert outcome_of(session, "14.160.1.2", 3590) == (
            "ambiguous", None, "2 accounts held this address around that time; not guessed")
        assert outcome_of(session, "14.160.1.2", 1800) == ("matched", first, None)
        assert outcome_of(session, "14.160.1.2", 7200) == ("matched", second, None)
        assert outcome_of(session, "14.160.1.2", -SKEW - 1) == (
            "unmatched", None, "no account held this IP address at that time")


def test_an_open_session_counts_until_its_open_until_bound(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, _ = two_accounts(session)
        assign(session, first, "14.160.1.2", 0, None, open_until=24 * 3600)
        session.flush()
        assert outcome_of(session, "14.160.1.2", 23 * 3600) == ("matched", first, None)
        assert outcome_of(session, "14.160.1.2", 24 * 3600 + 30) == ("matched", first, None)
        assert outcome_of(session, "14.160.1.2", 25 * 3600)[0] == "unmatched"


# --- prefixes -----------------------------------------------------------------------------------


def test_an_ipv6_address_inside_a_delegated_56_matches_its_holder(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, _ = two_accounts(session)
        assign(session, first, "2402:800:6310:5600::/56", 0, 86400)
        session.flush()
        assert outcome_of(session, "2402:800:6310:56ab:1:2:3:4", 600) == ("matched", first, None)
        assert outcome_of(session, "2402:800:6310:5700::1", 600)[0] == "unmatched"


def test_a_static_29_holds_its_eight_addresses_only(database_url: str) -> None:
    with session_scope(database_url) as session:
        office, home = two_accounts(session)
        assign(session, office, "113.160.8.0/29", -86400)
        assign(session, home, "113.160.8.8", -86400)  # the next address: a /128 that starts a /29 too
        session.flush()
        assert outcome_of(session, "113.160.8.7", 0) == ("matched", office, None)
        assert outcome_of(session, "113.160.8.8", 0) == ("matched", home, None)
        assert outcome_of(session, "113.160.8.9", 0)[0] == "unmatched"


# --- CGNAT --------------------------------------------------------------------------------------


def test_cgnat_with_a_port_resolves_to_the_private_holder(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0)
        nat_block(session, "100.64.0.2", (2048, 3071), 0)
        assign(session, first, "100.64.0.1", -3600)
        assign(session, second, "100.64.0.2", -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, 600, port=1500) == ("matched", first, None)
        assert outcome_of(session, PUBLIC, 600, port=2048) == ("matched", second, None)
        assert outcome_of(session, PUBLIC, 600, port=5000) == (
            "unmatched", None, "no CGNAT port block of this public address held port 5000 at that time")


def test_cgnat_without_a_port_on_a_shared_public_address_is_ambiguous(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0)
        nat_block(session, "100.64.0.2", (2048, 3071), 0)
        assign(session, first, "100.64.0.1", -3600)
        assign(session, second, "100.64.0.2", -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, 600) == (
            "ambiguous", None, "public address shared by 2 subscribers and the feed gave no port")


def test_cgnat_without_a_port_and_one_private_holder_matches(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0, 3600)
        nat_block(session, "100.64.0.2", (2048, 3071), 7200)  # later: not around the event
        assign(session, first, "100.64.0.1", -3600)
        assign(session, second, "100.64.0.2", -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, 600) == ("matched", first, None)


def test_the_private_address_follows_the_assignment_rules(database_url: str) -> None:
    """The private address behind a port is matched at the event's time, skew and hand-over included."""
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0)
        assign(session, first, "100.64.0.1", -3600, 600)
        assign(session, second, "100.64.0.1", 600)
        session.flush()
        assert outcome_of(session, PUBLIC, 590, port=1500) == (
            "ambiguous", None, "2 accounts held private address 100.64.0.1 (CGNAT) around that time; not guessed")
        assert outcome_of(session, PUBLIC, 1200, port=1500) == ("matched", second, None)
        nat_block(session, "100.64.0.9", (1024, 2047), -7200, -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, -5000, port=1500) == (
            "unmatched", None, "no account held private address 100.64.0.9 (CGNAT) at that time")


def test_a_port_block_handed_over_within_the_skew_is_ambiguous(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0, 600)
        nat_block(session, "100.64.0.2", (1024, 2047), 600)
        assign(session, first, "100.64.0.1", -3600)
        assign(session, second, "100.64.0.2", -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, 595, port=1500) == (
            "ambiguous", None,
            "2 private addresses held CGNAT port 1500 of this address around that time; not guessed")
        assert outcome_of(session, PUBLIC, 300, port=1500) == ("matched", first, None)


def test_nat_blocks_come_before_assignments_of_the_public_address(database_url: str) -> None:
    """An operator may also list its pool range as a static assignment (to an infrastructure account):
    while the public address is in a NAT block the subscriber behind the port is the answer."""
    with session_scope(database_url) as session:
        subscriber, infrastructure = two_accounts(session)
        assign(session, infrastructure, "113.161.0.0/24", -86400)
        nat_block(session, "100.64.0.1", (1024, 2047), 0, 3600)
        assign(session, subscriber, "100.64.0.1", -3600)
        session.flush()
        assert outcome_of(session, PUBLIC, 600, port=1500) == ("matched", subscriber, None)
        assert outcome_of(session, PUBLIC, 7200, port=1500) == ("matched", infrastructure, None)  # no block then


def test_resolve_ips_gives_the_same_outcomes_without_a_feed(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        nat_block(session, "100.64.0.1", (1024, 2047), 0)
        assign(session, first, "100.64.0.1", -3600)
        assign(session, second, "14.160.1.2", 0, 3600)
        session.flush()
        outcomes = resolve_ips(session, [Sighting(1, PUBLIC, at(10), 1500), Sighting(2, "14.160.1.2", at(3650)),
                                         Sighting(3, "14.160.1.3", at(10))], skew_seconds=SKEW)
        assert outcomes == {1: ("matched", first, None), 2: ("matched", second, None),
                            3: ("unmatched", None, "no account held this IP address at that time")}


# --- batches ------------------------------------------------------------------------------------


def test_a_feed_larger_than_a_batch_is_matched_in_full_and_other_feeds_are_untouched(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        assign(session, first, "14.160.1.2", 0, 3600)
        assign(session, second, "14.160.1.3", 0, 3600)
        feeds = [Feed(format="shadowserver", filename=f"{n}.csv", file_sha256=str(n) * 64) for n in (1, 2)]
        session.add_all(feeds)
        session.flush()
        for line in range(2, 12):  # the two feeds' items interleave by id
            for feed in feeds:
                session.add(FeedItem(feed_id=feed.id, line=line, status="pending", identifier_kind="ip",
                                     identifier="14.160.1.2" if line % 2 else "14.160.1.3", seen_at=at(60)))
            session.flush()
        session.add(FeedItem(feed_id=feeds[0].id, line=12, status="pending", identifier_kind="msisdn",
                             identifier="+84912345678"))
        session.add(FeedItem(feed_id=feeds[0].id, line=13, status="pending", identifier_kind="ip",
                             identifier="14.160.1.2"))
        session.flush()
        counts = match_feed(session, feeds[0].id, skew_seconds=SKEW, batch_size=3)
        assert (counts.matched, counts.unmatched, counts.ambiguous) == (11, 1, 0)
        rows = session.execute(sa.select(FeedItem.line, FeedItem.account_id, FeedItem.reason)
                               .where(FeedItem.feed_id == feeds[0].id).order_by(FeedItem.line)).all()
        assert [row.account_id for row in rows[:10]] == [second, first] * 5
        assert rows[10].account_id == first  # the phone number of HN1
        assert rows[11].reason == "an IP address without a time cannot be matched"
        untouched = session.exec(select(FeedItem.status).where(FeedItem.feed_id == feeds[1].id)).all()
        assert set(untouched) == {"pending"}


# --- the same outcomes on both backends ---------------------------------------------------------


def _write_inputs(directory: Path) -> tuple[Path, Path, Path]:
    subscribers = write_csv(directory / "subscribers.csv", ["account_id", "full_name", "msisdn"], [
        [f"HN{n}", f"Khách hàng {n}", f"09123456{n:02d}"] for n in range(1, 7)])
    # Local time (+07): 19:00 local is 12:00 UTC.
    sessions = write_csv(directory / "sessions.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-20 19:00:00", "2026-11-20 20:00:00"],
        ["HN2", "14.160.1.2", "2026-11-20 20:00:00", ""],
        ["HN5", "100.64.0.1", "2026-11-20 00:00:00", ""],
        ["HN6", "100.64.0.2", "2026-11-20 00:00:00", ""],
    ])
    rows = [
        ["2026-11-20 12:30:00", "14.160.1.2", "40000"],     # HN1 mid-session
        ["2026-11-20 13:00:10", "14.160.1.2", "40000"],     # 10 s after the hand-over: ambiguous
        ["2026-11-20 14:00:00", "14.160.1.2", "40000"],     # HN2
        ["2026-11-20 11:59:30", "14.160.1.2", ""],          # 30 s before HN1's start: skew → HN1
        ["2026-11-20 12:00:00", "2402:800:6310:56ab::1", ""],  # HN3's /56
        ["2026-11-20 12:00:00", "113.160.8.6", ""],         # HN4's /29
        ["2026-11-20 12:00:00", "113.160.8.8", ""],         # outside: unmatched
        ["2026-11-20 12:00:00", PUBLIC, "1500"],            # CGNAT → 100.64.0.1 → HN5
        ["2026-11-20 12:00:00", PUBLIC, "2500"],            # CGNAT → 100.64.0.2 → HN6
        ["2026-11-20 12:00:00", PUBLIC, ""],                # CGNAT, shared, no port: ambiguous
        ["2026-11-20 12:00:00", PUBLIC, "9000"],            # CGNAT, no block holds the port
    ]
    feed = write_csv(directory / "2026-11-20-event4_sinkhole-vietnam-geo.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
                     [[t, ip, port, "sinkhole", "mirai", ""] for t, ip, port in rows])
    return subscribers, sessions, feed


def _outcomes(database_url: str, inputs: tuple[Path, Path, Path]) -> list[tuple[int, str, str | None, str | None]]:
    subscribers, sessions, feed = inputs
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="Asia/Ho_Chi_Minh")
        assert import_assignments(session, sessions, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh").rejected == 0
        # Prefixes (static-csv, RADIUS delegations) and NAT blocks come from other parsers: stored directly.
        accounts = dict(session.execute(sa.select(Account.account_ref, Account.id)).all())
        assign(session, accounts["HN3"], "2402:800:6310:5600::/56", -12 * 3600)
        assign(session, accounts["HN4"], "113.160.8.0/29", -300 * 86400)
        nat_block(session, "100.64.0.1", (1024, 2047), -3600)
        nat_block(session, "100.64.0.2", (2048, 3071), -3600)
    with session_scope(database_url) as session:
        feed_id = import_feed(session, feed, fmt="shadowserver").id
    with session_scope(database_url) as session:
        return [(line, status, ref, reason) for line, status, ref, reason in session.execute(
            sa.select(FeedItem.line, FeedItem.status, Account.account_ref, FeedItem.reason)
            .outerjoin(Account, Account.id == FeedItem.account_id)
            .where(FeedItem.feed_id == feed_id).order_by(FeedItem.line))]


def test_the_same_files_give_the_same_outcomes_on_sqlite_and_postgresql(sqlite_url: str, postgres_url: str,
                                                                         tmp_path: Path) -> None:
    inputs = _write_inputs(tmp_path)
    on_sqlite = _outcomes(sqlite_url, inputs)
    assert on_sqlite == _outcomes(postgres_url, inputs)
    no_holder = "no account held this IP address at that time"
    assert on_sqlite == [
        (2, "matched", "HN1", None),
        (3, "ambiguous", None, "2 accounts held this address around that time; not guessed"),
        (4, "matched", "HN2", None),
        (5, "matched", "HN1", None),
        (6, "matched", "HN3", None),
        (7, "matched", "HN4", None),
        (8, "unmatched", None, no_holder),
        (9, "matched", "HN5", None),
        (10, "matched", "HN6", None),
        (11, "ambiguous", None, "public address shared by 2 subscribers and the feed gave no port"),
        (12, "unmatched", None, "no CGNAT port block of this public address held port 9000 at that time"),
    ]


# --- how many holders an ambiguous reason names -------------------------------------------------


def test_an_ambiguous_reason_counts_distinct_accounts_not_intervals(database_url: str) -> None:
    """The reason names accounts: two intervals of one account are one holder, three accounts three."""
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        third = add_account(session, "HN3", msisdn=None).id
        assign(session, first, "14.160.1.2", 0, 3600)
        assign(session, first, "14.160.1.2", 3600, 7200)     # the same account again at the hand-over
        assert outcome_of(session, "14.160.1.2", 3590) == ("matched", first, None)
        assign(session, second, "14.160.1.2", 3620, 7200)    # a second holder 30 s later: 3 intervals, 2 accounts
        assert outcome_of(session, "14.160.1.2", 3600) == (
            "ambiguous", None, "2 accounts held this address around that time; not guessed")
        assign(session, third, "14.160.1.2", 3630, 7200)
        assert outcome_of(session, "14.160.1.2", 3600) == (
            "ambiguous", None, "3 accounts held this address around that time; not guessed")


def test_a_cgnat_private_address_with_three_holders_names_them_all(database_url: str) -> None:
    with session_scope(database_url) as session:
        first, second = two_accounts(session)
        third = add_account(session, "HN3", msisdn=None).id
        nat_block(session, "100.64.0.1", (1024, 2047), 0)
        for account, start in ((first, -3600), (second, 590), (third, 600)):
            assign(session, account, "100.64.0.1", start)
        assert outcome_of(session, PUBLIC, 595, port=1500) == (
            "ambiguous", None, "3 accounts held private address 100.64.0.1 (CGNAT) around that time; not guessed")


def test_matching_leaves_the_pooled_connection_as_it_found_it(database_url: str) -> None:
    """The page cache (SQLite) and JIT (PostgreSQL) settings matching uses are its own: the session's
    later statements, and the next user of the pooled connection, get the usual ones back."""
    setting = "PRAGMA cache_size" if database_url.startswith("sqlite") else "SELECT current_setting('jit')"
    with session_scope(database_url) as session:
        first, _ = two_accounts(session)
        assign(session, first, "14.160.1.2", 0, 3600)
        before = session.execute(sa.text(setting)).scalar()
        assert outcome_of(session, "14.160.1.2", 600) == ("matched", first, None)
        assert session.execute(sa.text(setting)).scalar() == before
        temporary = "SELECT name FROM sqlite_temp_master" if database_url.startswith("sqlite") else \
            "SELECT relname FROM pg_class WHERE relpersistence = 't'"
        assert session.execute(sa.text(temporary)).all() == []
