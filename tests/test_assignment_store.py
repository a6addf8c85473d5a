"""Storing IP assignments: upserts, session ids, the closing rule, usernames, prefixes, retention, and
the sessions-csv fast reader giving exactly what the general parser gives (issue 7)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from notifier.db import session_scope
from notifier.identity import assignments as store
from notifier.identity.assignments import import_assignments, purge_assignments, purge_cutoff
from notifier.importing import import_subscribers
from notifier.ingest import assignments as ingest
from notifier.ingest.assignments import sessions_csv_general_rows, sessions_csv_rows
from notifier.ingest.records import Rejection, SessionRecord
from notifier.models import OPEN_END, IpAssignment, NatBlock
from tests.factories import write_csv

LOCAL = "Asia/Ho_Chi_Minh"
SESSIONS = ["account_id", "ip", "start", "end"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _subscribers(database_url: str, tmp_path: Path, *rows: list[str]) -> None:
    path = write_csv(tmp_path / "subscribers.csv", ["account_id", "full_name", "usernames"],
                     [list(row) for row in rows] or [["HN1", "Nguyễn Văn Ánh", "hn_1"], ["HN2", "Trần Thị Bích", "hn_2"],
                                                     ["HN3", "Lê Văn Cường", ""]])
    with session_scope(database_url) as session:
        assert import_subscribers(session, path, tz=LOCAL).rejected == 0


def _import(database_url: str, path: Path, fmt: str = "sessions-csv"):  # type: ignore[no-untyped-def]
    with session_scope(database_url) as session:
        return import_assignments(session, path, fmt=fmt, tz=LOCAL)


def _rows(database_url: str) -> list[tuple[object, ...]]:
    """Every stored interval as (account, network, start key, end key, prefix, start, end, open_until,
    covers_until, session_ref), in a stable order."""
    with session_scope(database_url) as session:
        table = IpAssignment.__table__
        account = sa.table("account", sa.column("id"), sa.column("account_ref"))
        query = (sa.select(account.c.account_ref, table.c.network, table.c.range_start, table.c.range_end,
                           table.c.prefix_len, table.c.started_at, table.c.ended_at, table.c.open_until,
                           table.c.covers_until, table.c.session_ref)
                 .join(account, account.c.id == table.c.account_id)
                 .order_by(table.c.range_start, table.c.started_at, account.c.account_ref))
        return [tuple(row) for row in session.execute(query)]


@pytest.fixture
def fake_format(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[SessionRecord | Rejection]]]:
    """A registered assignment format whose "files" are lists of records (RADIUS-like sources with
    session ids, bounds, usernames and prefixes), so storage is tested apart from any parser."""
    files: dict[str, list[SessionRecord | Rejection]] = {}

    def parse(path: Path | str, *, tz: str) -> Iterator[SessionRecord | Rejection]:
        yield from files[Path(path).name]

    monkeypatch.setitem(ingest.ASSIGNMENT_FORMATS, "fake-radius", parse)
    yield files


# --- upserts ----------------------------------------------------------------------------------------


def test_the_same_file_twice_changes_nothing(database_url: str, tmp_path: Path) -> None:
    _subscribers(database_url, tmp_path)
    path = write_csv(tmp_path / "s.csv", SESSIONS, [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-19 12:00:00"],
        ["HN2", "14.160.1.2", "2026-11-19 12:30:00", ""],
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""],  # the same session again, without its end
        ["HN3", "2402:800:6310:5600::1", "2026-11-19 09:00:00+07:00", "2026-11-19T03:00:00Z"],
    ])
    first = _import(database_url, path)
    assert (first.accepted, first.rejected) == (4, 0)
    stored = _rows(database_url)
    with session_scope(database_url) as session:
        ids = sorted(session.execute(sa.select(IpAssignment.id)).scalars())
    again = _import(database_url, path)
    assert (again.accepted, again.rejected) == (4, 0)
    assert _rows(database_url) == stored
    with session_scope(database_url) as session:
        assert sorted(session.execute(sa.select(IpAssignment.id)).scalars()) == ids
    assert [row[5:9] for row in stored] == [
        (utc(2026, 11, 19, 1), utc(2026, 11, 19, 5), None, utc(2026, 11, 19, 5)),  # the given end is kept
        (utc(2026, 11, 19, 5, 30), None, None, OPEN_END),
        (utc(2026, 11, 19, 2), utc(2026, 11, 19, 3), None, utc(2026, 11, 19, 3)),
    ]


def test_a_later_file_closes_an_open_session(database_url: str, tmp_path: Path) -> None:
    _subscribers(database_url, tmp_path)
    _import(database_url, write_csv(tmp_path / "a.csv", SESSIONS, [["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""]]))
    assert [row[6:9] for row in _rows(database_url)] == [(None, None, OPEN_END)]
    _import(database_url, write_csv(tmp_path / "b.csv", SESSIONS, [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-19 20:00:00"]]))
    assert [row[6:9] for row in _rows(database_url)] == [(utc(2026, 11, 19, 13), None, utc(2026, 11, 19, 13))]


# --- session ids ------------------------------------------------------------------------------------


def test_a_stop_in_a_later_file_closes_the_start_of_its_session(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]]) -> None:
    _subscribers(database_url, tmp_path)
    start = utc(2026, 11, 19, 1)
    fake_format["day1"] = [
        SessionRecord(2, None, "14.160.1.2", start, None, "hn_1", "4D2A0F1C", start + timedelta(hours=24)),
        SessionRecord(3, None, "14.160.1.2", start, None, "hn_1", "4D2A0F1C", start + timedelta(hours=30)),  # interim
        SessionRecord(4, None, "2402:800:6310:5600::/56", start, None, "hn_1", "4D2A0F1C",
                      start + timedelta(hours=24)),
    ]
    # The Stop's start is computed from Acct-Session-Time and differs by a second from the Start's.
    fake_format["day2"] = [
        SessionRecord(7, None, "14.160.1.2", start + timedelta(seconds=1), start + timedelta(hours=26), "hn_1",
                      "4D2A0F1C"),
    ]
    for name in ("day1", "day2", "day2"):
        assert _import(database_url, tmp_path / name, "fake-radius").rejected == 0
    rows = _rows(database_url)
    assert [(r[1], r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows] == [
        ("14.160.1.2", 128, start, start + timedelta(hours=26), start + timedelta(hours=30),
         start + timedelta(hours=26), "4D2A0F1C"),
        ("2402:800:6310:5600::/56", 56, start, None, start + timedelta(hours=24), start + timedelta(hours=24),
         "4D2A0F1C"),
    ]


# --- the closing rule -------------------------------------------------------------------------------


def test_a_start_on_an_address_closes_other_accounts_open_sessions_there(database_url: str, tmp_path: Path) -> None:
    _subscribers(database_url, tmp_path)
    _import(database_url, write_csv(tmp_path / "a.csv", SESSIONS, [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""],
        ["HN1", "14.160.1.2", "2026-11-19 09:00:00", ""],  # the same account again: its own does not close
        ["HN3", "14.160.1.9", "2026-11-19 08:00:00", ""],  # another address: untouched
    ]))
    # A later file (the file with HN2's start) and, out of order, an earlier one (HN3 before HN1).
    _import(database_url, write_csv(tmp_path / "b.csv", SESSIONS, [["HN2", "14.160.1.2", "2026-11-19 10:00:00", ""]]))
    _import(database_url, write_csv(tmp_path / "c.csv", SESSIONS, [["HN3", "14.160.1.2", "2026-11-19 07:00:00", ""]]))
    handover = utc(2026, 11, 19, 3)
    assert [(r[0], r[1], r[5], r[6], r[8]) for r in _rows(database_url)] == [
        ("HN3", "14.160.1.2", utc(2026, 11, 19, 0), utc(2026, 11, 19, 1), utc(2026, 11, 19, 1)),
        ("HN1", "14.160.1.2", utc(2026, 11, 19, 1), handover, handover),
        ("HN1", "14.160.1.2", utc(2026, 11, 19, 2), handover, handover),
        ("HN2", "14.160.1.2", handover, None, OPEN_END),
        ("HN3", "14.160.1.9", utc(2026, 11, 19, 1), None, OPEN_END),
    ]


def test_the_closing_rule_keeps_ended_and_expired_sessions_as_they_are(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]]) -> None:
    _subscribers(database_url, tmp_path)
    t0 = utc(2026, 11, 19, 1)
    fake_format["log"] = [
        SessionRecord(2, "HN1", "14.160.1.2", t0, None, None, "s1", t0 + timedelta(hours=1)),  # expired before HN2
        SessionRecord(3, "HN3", "14.160.1.2", t0, t0 + timedelta(hours=5)),  # ended after HN2's start: kept
        SessionRecord(4, "HN2", "14.160.1.2", t0 + timedelta(hours=2), None, None, "s2"),
        SessionRecord(5, "HN3", "14.160.1.2/31", t0 + timedelta(hours=1)),  # another range, same start key
    ]
    _import(database_url, tmp_path / "log", "fake-radius")
    assert [(r[0], r[4], r[6], r[8]) for r in _rows(database_url)] == [
        ("HN1", 128, None, t0 + timedelta(hours=1)),
        ("HN3", 128, t0 + timedelta(hours=5), t0 + timedelta(hours=5)),
        ("HN3", 127, None, OPEN_END),
        ("HN2", 128, None, OPEN_END),
    ]


# --- accounts and networks --------------------------------------------------------------------------


def test_usernames_name_the_account_and_unknown_ones_are_rejected_without_repeating_them(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]]) -> None:
    _subscribers(database_url, tmp_path, ["HN1", "Nguyễn Văn Ánh", "hn_1;0912345678"], ["HN2", "Trần Thị Bích", "shared"],
                 ["HN3", "Lê Văn Cường", "shared"])
    t0 = utc(2026, 11, 19, 1)
    fake_format["log"] = [
        SessionRecord(2, None, "14.160.1.2", t0, username="0912345678"),
        SessionRecord(3, None, "14.160.1.3", t0, username="0987654321"),
        SessionRecord(4, None, "14.160.1.4", t0, username="shared"),
        SessionRecord(5, None, "14.160.1.5", t0),
        SessionRecord(6, "HN9", "14.160.1.6", t0),
        Rejection(7, "Framed-IP-Address: not an IP address", "raw"),
        SessionRecord(8, None, "14.160.1.7/30", t0, username="hn_1"),
    ]
    result = _import(database_url, tmp_path / "log", "fake-radius")
    assert result.errors == [
        {"line": 3, "reason": "unknown username (no account lists it in `usernames`)"},
        {"line": 4, "reason": "username listed on 2 accounts (fix the subscriber import)"},
        {"line": 5, "reason": "no account_id and no username"},
        {"line": 6, "reason": "unknown account 'HN9'"},
        {"line": 7, "reason": "Framed-IP-Address: not an IP address"},
        {"line": 8, "reason": "ip: not an IP network: '14.160.1.7/30' (14.160.1.7/30 has host bits set)"},
    ]
    assert "0987654321" not in json.dumps(result.as_json())
    assert [(r[0], r[1]) for r in _rows(database_url)] == [("HN1", "14.160.1.2")]  # "hn_1;0912345678": two names


def test_usernames_resolve_and_networks_are_stored_as_ranges(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]]) -> None:
    _subscribers(database_url, tmp_path)
    t0 = utc(2026, 11, 19, 1)
    fake_format["log"] = [
        SessionRecord(2, None, "2402:800:6310:5600::/56", t0, username="hn_1"),
        SessionRecord(3, "HN2", "14.160.1.8/29", t0),
        SessionRecord(4, "HN3", "14.160.1.7/29", t0),  # host bits set: refused, not rounded
    ]
    result = _import(database_url, tmp_path / "log", "fake-radius")
    assert result.accepted == 2
    assert result.errors == [{"line": 4, "reason": "ip: not an IP network: '14.160.1.7/29' "
                                                   "(14.160.1.7/29 has host bits set)"}]
    assert [r[:5] for r in _rows(database_url)] == [
        ("HN2", "14.160.1.8/29", "00000000000000000000ffff0ea00108", "00000000000000000000ffff0ea0010f", 125),
        ("HN1", "2402:800:6310:5600::/56", "24020800631056000000000000000000", "24020800631056ffffffffffffffffff", 56),
    ]


def test_a_bounded_account_cache_still_knows_every_account_of_a_batch(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _subscribers(database_url, tmp_path)
    monkeypatch.setattr(store, "MAX_CACHED_ACCOUNTS", 2)
    monkeypatch.setattr(store, "BATCH_ROWS", 3)
    path = write_csv(tmp_path / "s.csv", SESSIONS, [
        [ref, f"14.160.1.{n}", "2026-11-19 08:00:00", "2026-11-19 09:00:00"]
        for n, ref in enumerate(["HN1", "HN2", "HN1", "HN3", "HN2", "HN1", "HN3"])])
    result = _import(database_url, path)
    assert (result.accepted, result.rejected) == (7, 0)


# --- retention --------------------------------------------------------------------------------------


def _nat_block(released_at: datetime | None, open_until: datetime | None = None) -> dict[str, object]:
    allocated = utc(2026, 1, 1)
    return {"public_ip": "203.0.113.1", "public_key": "00000000000000000000ffffcb007101", "port_start": 1024,
            "port_end": 2047, "private_ip": "100.64.0.1", "private_key": "00000000000000000000ffff64400001",
            "allocated_at": allocated + timedelta(minutes=1 if released_at else 2 if open_until else 3),
            "released_at": released_at, "open_until": open_until,
            "covers_until": released_at or open_until or OPEN_END}


def test_purge_deletes_what_ended_before_the_cutoff_and_never_an_open_interval(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _subscribers(database_url, tmp_path)
    t0 = utc(2026, 1, 1)
    fake_format["log"] = [
        SessionRecord(2, "HN1", "14.160.1.2", t0, t0 + timedelta(hours=1)),  # ended long ago: purged
        SessionRecord(3, "HN1", "14.160.1.3", t0, None, None, "s", t0 + timedelta(hours=24)),  # bound passed: purged
        SessionRecord(4, "HN1", "14.160.1.4", t0),  # still open: kept whatever the cutoff
        SessionRecord(5, "HN2", "14.160.1.5", t0, utc(2026, 6, 1)),  # ended after the cutoff: kept
    ]
    _import(database_url, tmp_path / "log", "fake-radius")
    with session_scope(database_url) as session:
        session.execute(sa.insert(NatBlock.__table__), [_nat_block(t0 + timedelta(hours=2)),
                                                         _nat_block(None, t0 + timedelta(hours=3)), _nat_block(None)])
    monkeypatch.setattr(store, "PURGE_BATCH", 1)  # several batches
    with session_scope(database_url) as session:
        assert purge_assignments(session, before=utc(2026, 3, 1)) == {"ip_assignment": 2, "nat_block": 2}
    with session_scope(database_url) as session:
        assert purge_assignments(session, before=utc(8999, 1, 1)) == {"ip_assignment": 1, "nat_block": 0}
        assert [r.network for r in session.execute(sa.select(IpAssignment.network))] == ["14.160.1.4"]
        assert session.execute(sa.select(sa.func.count()).select_from(NatBlock)).scalar() == 1


def test_purge_cutoff_comes_from_retention_days_or_the_options() -> None:
    now = utc(2026, 11, 20, 12)
    assert purge_cutoff(now=now, retention_days=180, tz=LOCAL) == now - timedelta(days=180)
    assert purge_cutoff(now=now, retention_days=180, tz=LOCAL, older_than_days=30) == now - timedelta(days=30)
    assert purge_cutoff(now=now, retention_days=180, tz=LOCAL, before="2026-06-01") == utc(2026, 5, 31, 17)
    for options, message in [({"before": "2026-06-01", "older_than_days": 3}, "not both"),
                             ({"before": "June"}, "--before: not a time"),
                             ({"before": "2027-01-01"}, "in the future"),
                             ({"older_than_days": 0}, "at least 1")]:
        with pytest.raises(Exception, match=message):
            purge_cutoff(now=now, retention_days=180, tz=LOCAL, **options)  # type: ignore[arg-type]


def test_purge_command_prints_counts_and_refuses_two_cutoffs(cli_db: str, tmp_path: Path) -> None:
    import cli

    _subscribers(cli_db, tmp_path)
    _import(cli_db, write_csv(tmp_path / "s.csv", SESSIONS, [
        ["HN1", "14.160.1.2", "2020-01-01 08:00:00", "2020-01-01 09:00:00"],
        ["HN2", "14.160.1.3", "2020-01-01 08:00:00", ""]]))
    runner = CliRunner()
    both = runner.invoke(cli.app, ["assignments", "purge", "--before", "2021-01-01", "--older-than-days", "9"])
    assert both.exit_code == 2 and "error: give --before or --older-than-days, not both" in both.output
    result = runner.invoke(cli.app, ["assignments", "purge", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deleted"] == {"ip_assignment": 1, "nat_block": 0}


# --- the sessions-csv fast reader -------------------------------------------------------------------

MIXED = (
    "\ufeffaccount_id,ip,start,end,username,nas\n"
    "HN1,14.160.1.2,2026-11-19 08:00:00,2026-11-19 09:00:00,hn_1,nas1\n"
    "HN1,14.160.1.3,2026-11-19T08:00:00,,,nas1\r\n"  # T separator, CRLF, open
    "HN2,14.160.1.4,2026-11-19T01:00:00Z,2026-11-19 09:00:00+07:00,,\n"  # times with a zone
    "HN2,2402:0800:6310:5600::1,19/11/2026 08:00,1795136400,,\n"  # IPv6, day-first, epoch
    "HN3,14.160.1.5,2026-11-19 09:00:00,2026-11-19 08:59:59,,\n"  # end before start
    "HN9,14.160.1.6,2026-11-19 08:00:00,,,\n"  # unknown account
    "HN1,014.160.1.7,2026-11-19 08:00:00,,,\n"  # a leading zero
    "HN1,14.160.1.256,2026-11-19 08:00:00,,,\n"
    "HN1,14.160.1.8,2026-13-19 08:00:00,,,\n"
    "HN1,14.160.1.9,2026-11-19 08:00,,,\n"  # no seconds
    "\"HN1\",\"14.160.1.10\",\"2026-11-19 08:00:00\",\"\",\"hn,1\",x\n"  # quoted, a comma inside
    "HN1,14.160.1.11,2026-11-19 08:00:00,,\"two\nlines\",x\n"  # a field over two lines
    "HN1,14.160.1.12,2026-11-19 08:00:00,,\n"  # a missing column
    "HN1,14.160.1.13,2026-11-19 08:00:00,,,x,y\n"  # one too many
    ",,,,,\n"
    "\n"
    "Ánh1,14.160.1.14,2026-11-19 08:00:00,,Nguyễn,\n"  # NFC text
    "HN1,14.160.1.15,2026-11-19 08:00:00,,\x00,\n"
    "HN1,14.160.1.17,1899-12-31 23:00:00,,,\n"
    "HN3,::ffff:14.160.1.18,2026-11-19 08:00:00,,,\n"
    " HN3 , 14.160.1.19 , 2026-11-19 08:00:00 , ,,\n"
    f"{'A' * 65},14.160.1.20,2026-11-19 08:00:00,,,\n"
)


def _mixed_file(tmp_path: Path, gz: bool) -> Path:
    data = MIXED.encode("utf-8") + b"HN1,14.160.1.21,\xff,,,\n" + b'HN1,14.160.1.22,2026-11-19 08:00:00,,,"unterminated\n'

    path = tmp_path / ("mixed.csv.gz" if gz else "mixed.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_the_fast_reader_gives_the_general_parsers_rows_and_rejections(tmp_path: Path, gz: bool) -> None:
    path = _mixed_file(tmp_path, gz)
    fast = list(sessions_csv_rows(path, tz=LOCAL))
    assert fast == list(sessions_csv_general_rows(path, tz=LOCAL))
    assert [item.line for item in fast if isinstance(item, Rejection)] == [6, 8, 9, 10, 15, 16, 20, 24, 25]
    assert [item.line for item in fast if not isinstance(item, Rejection)] == [
        2, 3, 4, 5, 7, 11, 12, 13, 19, 21, 22, 23, 26]


def test_the_fast_and_general_paths_store_the_same_rows_and_rejections(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _subscribers(database_url, tmp_path)
    path = _mixed_file(tmp_path, gz=False)
    fast = _import(database_url, path)
    stored = _rows(database_url)
    with session_scope(database_url) as session:
        session.execute(sa.delete(IpAssignment.__table__))
    monkeypatch.setattr(store, "FAST_ASSIGNMENT_FORMATS", {})
    general = _import(database_url, path)
    assert _rows(database_url) == stored
    assert general.as_json() == fast.as_json()
    assert (fast.accepted, fast.rejected) == (11, 11)
    assert {"line": 7, "reason": "unknown account 'HN9'"} in fast.errors
