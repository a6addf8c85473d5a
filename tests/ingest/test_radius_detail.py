"""radius-detail: FreeRADIUS accounting records become sessions per address, across files and zones."""

from __future__ import annotations

import gzip
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from notifier.db import session_scope
from notifier.errors import InputError
from notifier.importing import import_assignments, import_subscribers
from notifier.ingest import radius
from notifier.ingest.assignments import get_assignment_parser
from notifier.ingest.radius import parse_radius_detail
from notifier.ingest.records import Rejection, SessionRecord
from notifier.models import IpAssignment

DATA = Path(__file__).parent.parent / "data" / "identity"
DAY_1, DAY_2 = DATA / "detail-20261120", DATA / "detail-20261121"
PREFIX = "2402:800:6310:5600::/56"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def parse(path: Path, **kwargs: object) -> list[SessionRecord | Rejection]:
    return list(parse_radius_detail(path, **kwargs))  # type: ignore[arg-type]


def record(text: str, **attributes: str) -> str:
    """One detail record: a date line, tab-indented attributes, a blank line."""
    lines = [text] + [f"\t{name.replace('_', '-')} = {value}" for name, value in attributes.items()]
    return "\n".join(lines) + "\n\n"


def write(tmp_path: Path, *records: str, name: str = "detail") -> Path:
    path = tmp_path / name
    path.write_text("".join(records), encoding="utf-8")
    return path


def raw_lines(path: Path, first: int, last: int) -> str:
    """The text of physical lines first..last of a file, as a rejection keeps it."""
    return "\n".join(path.read_text(encoding="utf-8").splitlines()[first - 1:last])


def session(line: int, ip: str, start: datetime, end: datetime | None, user: str, ref: str,
            open_until: datetime | None = None) -> SessionRecord:
    return SessionRecord(line, None, ip, start, end, user, ref, open_until)


def test_a_days_detail_file(tmp_path: Path) -> None:
    """Start/Interim/Stop, an IPv4 address with a delegated IPv6 prefix, a Start in yesterday's file,
    an address handed over without a Stop, NAS housekeeping and broken records, local time (+07)."""
    assert parse(DAY_1) == [
        Rejection(40, "not a FreeRADIUS date line: 'Fri Nov 20 08:3'",
                  'Fri Nov 20 08:3\n\tAcct-Session-Id = "4D2A\n\tAcct-Status-Ty'),
        Rejection(44, "Framed-IP-Address: not an IP address: '14.160.1.300'", raw_lines(DAY_1, 44, 50)),
        # timed by `Timestamp` less Acct-Delay-Time (08:05:02 logged, 2 s late) → 08:05:00 +07
        session(17, "14.160.1.3", utc(2026, 11, 20, 1, 5), utc(2026, 11, 20, 2, 5), "hn_100090",
                "4D2A0F1D|10.10.0.1|hn_100090"),
        # no Stop: the next Start on 14.160.1.4 (hn_100092 at 11:00 +07) ends it
        session(68, "14.160.1.4", utc(2026, 11, 20, 3), utc(2026, 11, 20, 4), "hn_100091", "aa01"),
        # Stop whose Start is in yesterday's file: started = Stop − Acct-Session-Time
        session(96, "14.160.1.6", utc(2026, 11, 20, 5), utc(2026, 11, 20, 5, 30), "hn_100094", "aa04"),
        Rejection(106, "Start without User-Name", raw_lines(DAY_1, 106, 111)),
        # still open at the end of the file: bounded by the last record showing it alive + 24 h
        session(1, "14.160.1.2", utc(2026, 11, 20, 1), None, "hn_100089", "9c1f7e0a2b3d4c5e", utc(2026, 11, 21, 1, 10)),
        session(1, PREFIX, utc(2026, 11, 20, 1), None, "hn_100089", "9c1f7e0a2b3d4c5e", utc(2026, 11, 21, 1, 10)),
        session(77, "14.160.1.4", utc(2026, 11, 20, 4), None, "hn_100092", "aa02", utc(2026, 11, 21, 4)),
        # Interim-Update of a session begun yesterday: started = 12:00 +07 − 7200 s
        session(86, "14.160.1.5", utc(2026, 11, 20, 3), None, "hn_100093", "aa03", utc(2026, 11, 21, 5)),
    ]


def test_a_stop_in_the_next_file_closes_the_session_opened_the_day_before() -> None:
    """The parser alone: same session_ref and the same start (Stop − Acct-Session-Time) for each
    address, so the importer closes yesterday's open rows instead of adding new ones."""
    opened = {(r.ip, r.session_ref): r for r in parse(DAY_1) if isinstance(r, SessionRecord) and r.ended_at is None}
    closed = parse(DAY_2)
    assert closed == [
        session(1, "14.160.1.2", utc(2026, 11, 20, 1), utc(2026, 11, 21), "hn_100089", "9c1f7e0a2b3d4c5e"),
        session(1, PREFIX, utc(2026, 11, 20, 1), utc(2026, 11, 21), "hn_100089", "9c1f7e0a2b3d4c5e"),
    ]
    for stop in closed:
        assert isinstance(stop, SessionRecord)
        assert opened[(stop.ip, stop.session_ref)].started_at == stop.started_at


def test_gzip_file_gives_the_same_records(tmp_path: Path) -> None:
    packed = tmp_path / "detail-20261120.gz"
    packed.write_bytes(gzip.compress(DAY_1.read_bytes()))
    assert parse(packed) == parse(DAY_1)


def test_registered_as_an_assignment_format() -> None:
    assert get_assignment_parser("radius-detail") is parse_radius_detail


def test_the_date_line_is_in_the_sources_zone(tmp_path: Path) -> None:
    """No Event-Timestamp nor Timestamp: "08:00" of the date line is 08:00 in Hà Nội, 01:00 UTC."""
    path = write(tmp_path, record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Stop", User_Name='"hn_1"',
                                  Acct_Session_Id='"S1"', Framed_IP_Address="14.160.1.2", Acct_Session_Time="60"))
    [local] = parse(path)
    [in_utc] = parse(path, tz="UTC")
    assert isinstance(local, SessionRecord) and isinstance(in_utc, SessionRecord)
    assert (local.started_at, local.ended_at) == (utc(2026, 11, 20, 0, 59), utc(2026, 11, 20, 1))
    assert in_utc.ended_at - local.ended_at == timedelta(hours=7)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ('"Nov 20 2026 08:00:00 +07"', utc(2026, 11, 20, 1)),
        ('"Nov 20 2026 08:00:00 +0700"', utc(2026, 11, 20, 1)),
        ('"Nov 20 2026 08:00:00 ICT"', utc(2026, 11, 20, 1)),
        ('"Nov 20 2026 08:00:00 UTC"', utc(2026, 11, 20, 8)),
        ('"Nov 20 2026 08:00:00"', utc(2026, 11, 20, 1)),  # no zone: the source's
        ('"Nov  6 2026 08:00:00 -05:30"', utc(2026, 11, 6, 13, 30)),
        ("1795136400", utc(2026, 11, 20, 1)),
        ('"2026-11-20T08:00:00+07:00"', utc(2026, 11, 20, 1)),
    ],
)
def test_event_timestamp_forms(tmp_path: Path, stamp: str, expected: datetime) -> None:
    path = write(tmp_path, record("Fri Nov 20 23:59:59 2026", Acct_Status_Type="Stop", User_Name="hn_1",
                                  Acct_Session_Id="S1", Framed_IP_Address="14.160.1.2", Event_Timestamp=stamp,
                                  Timestamp="1795199999"))
    [stop] = parse(path)
    assert isinstance(stop, SessionRecord) and stop.ended_at == expected


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"Event_Timestamp": '"Nov 20 2026 08:00:00 XYZ"'}, "Event-Timestamp: not a time: 'Nov 20 2026 08:00:00 XYZ'"),
        ({"Event_Timestamp": '"soon"'}, "Event-Timestamp: not a time: 'soon'"),
        ({"Acct_Session_Time": "-5"}, "Acct-Session-Time: '-5' is not a number of seconds"),
        ({"Framed_IPv6_Prefix": "2402:800:6310:5601::/56"}, "Framed-IPv6-Prefix: not an IP network"),
        ({"Acct_Session_Id": ""}, "no Acct-Unique-Session-Id or Acct-Session-Id"),
        ({"User_Name": '""'}, "Stop without User-Name"),
        ({"User_Name": "u" * 129}, "User-Name: longer than 128 characters"),
        ({"Acct_Status_Type": "Tunnel-Link-Start"}, "unsupported Acct-Status-Type 'Tunnel-Link-Start'"),
        ({"Acct_Status_Type": ""}, "no Acct-Status-Type"),
    ],
)
def test_unusable_records_are_rejected_at_their_date_line(tmp_path: Path, attributes: dict[str, str],
                                                         reason: str) -> None:
    base = {"Acct_Status_Type": "Stop", "User_Name": "hn_1", "Acct_Session_Id": "S1",
            "Framed_IP_Address": "14.160.1.2", "Acct_Session_Time": "60"}
    good = record("Fri Nov 20 09:00:00 2026", **{**base, "Acct_Session_Id": "S2"})
    path = write(tmp_path, good, record("Fri Nov 20 08:00:00 2026", **{**base, **attributes}), good)
    first, bad, last = parse(path)
    assert isinstance(bad, Rejection) and bad.line == 8 and bad.reason.startswith(reason), bad.reason
    assert isinstance(first, SessionRecord) and isinstance(last, SessionRecord)


def test_garbled_lines_reject_only_their_record(tmp_path: Path) -> None:
    stop = record("Fri Nov 20 09:00:00 2026", Acct_Status_Type="Stop", User_Name="hn_1", Acct_Session_Id="S1",
                  Framed_IP_Address="14.160.1.2", Acct_Session_Time="60")
    path = tmp_path / "detail"
    path.write_bytes(
        b"\tAcct-Session-Id = \"cut\"\n\tUser-Name = \"hn_0\"\n\n"  # the file starts mid-record
        + stop.encode()
        + b"Fri Nov 20 09:01:00 2026\n\tAcct-Status-Type = Start\n\tUser-Name \"hn_2\"\n\n"  # no " = "
        + b"Fri Nov 20 09:02:00 2026\n\tAcct-Status-Type = Start\n\tUser-Name = \"hn_\xff\"\n\n"  # bad byte
        + stop.replace("S1", "S3").encode()
    )
    results = parse(path)
    assert [(r.line, r.reason) for r in results if isinstance(r, Rejection)] == [
        (1, "attribute lines without a date line before them"),
        (11, "line 13: expected 'Attribute = value'"),
        (15, "line 17: not valid UTF-8 (byte 0xff at position 18; save the file as UTF-8)"),
    ]
    assert [r.session_ref for r in results if isinstance(r, SessionRecord)] == [
        "S1||hn_1", "S3||hn_1"]  # no NAS-IP-Address: the key keeps its place empty


def test_accounting_on_off_ends_the_sessions_of_that_nas_only(tmp_path: Path) -> None:
    def start(at: str, user: str, nas: str, ip: str) -> str:
        return record(f"Fri Nov 20 {at} 2026", Acct_Status_Type="Start", User_Name=user, Acct_Session_Id=user,
                      NAS_IP_Address=nas, Framed_IP_Address=ip)

    path = write(tmp_path, start("08:00:00", "a", "10.0.0.1", "14.160.1.2"),
                 start("08:00:00", "b", "10.0.0.2", "14.160.1.3"),
                 record("Fri Nov 20 09:00:00 2026", Acct_Status_Type="Accounting-On", NAS_IP_Address="10.0.0.1"))
    ended, still_open = parse(path)
    assert isinstance(ended, SessionRecord) and (ended.username, ended.ended_at) == ("a", utc(2026, 11, 20, 2))
    assert isinstance(still_open, SessionRecord) and still_open.username == "b" and still_open.ended_at is None


def test_a_session_silent_beyond_the_maximum_age_is_not_stretched_by_the_next_start(tmp_path: Path) -> None:
    """hn_1 shows no sign of life after 08:00; hn_2 takes its address at 20:00. With a 6-hour maximum
    hn_1 counts until 14:00 (open_until), not until 20:00; with 24 hours it ends at 20:00."""
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="hn_1", Acct_Session_Id="A",
                        Framed_IP_Address="14.160.1.2"),
                 record("Fri Nov 20 20:00:00 2026", Acct_Status_Type="Start", User_Name="hn_2", Acct_Session_Id="B",
                        Framed_IP_Address="14.160.1.2"))
    expired, _ = parse(path, max_session_hours=6)
    closed, _ = parse(path)
    assert isinstance(expired, SessionRecord) and isinstance(closed, SessionRecord)
    assert (expired.ended_at, expired.open_until) == (None, utc(2026, 11, 20, 7))
    assert (closed.ended_at, closed.open_until) == (utc(2026, 11, 20, 13), None)


def test_a_prefix_delegated_after_the_start_counts_from_when_it_appeared(tmp_path: Path) -> None:
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="hn_1", Acct_Session_Id="A",
                        Framed_IP_Address="14.160.1.2"),
                 record("Fri Nov 20 08:05:00 2026", Acct_Status_Type="Interim-Update", User_Name="hn_1",
                        Acct_Session_Id="A", Framed_IP_Address="14.160.1.2", Delegated_IPv6_Prefix=PREFIX,
                        Framed_IPv6_Prefix="2402:800:6310:56ff::/64"),
                 record("Fri Nov 20 09:00:00 2026", Acct_Status_Type="Stop", User_Name="hn_1", Acct_Session_Id="A",
                        Acct_Session_Time="3600"))  # a Stop without addresses still ends a known session
    assert [(r.ip, r.started_at, r.ended_at) for r in parse(path)] == [  # type: ignore[union-attr]
        ("14.160.1.2", utc(2026, 11, 20, 1), utc(2026, 11, 20, 2)),
        ("2402:800:6310:56ff::/64", utc(2026, 11, 20, 1, 5), utc(2026, 11, 20, 2)),
        (PREFIX, utc(2026, 11, 20, 1, 5), utc(2026, 11, 20, 2)),
    ]


def test_records_that_give_nothing_to_store_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="hn_1", Acct_Session_Id="A"),
                 record("Fri Nov 20 08:01:00 2026", Acct_Status_Type="Interim-Update", User_Name="hn_2",
                        Acct_Session_Id="B", Framed_IP_Address="0.0.0.0"),
                 record("Fri Nov 20 08:02:00 2026", Acct_Status_Type="Start", User_Name="hn_3", Acct_Session_Id="C",
                        Framed_IP_Address="14.160.1.9"),
                 record("Fri Nov 20 07:00:00 2026", Acct_Status_Type="Stop", User_Name="hn_3", Acct_Session_Id="C"))
    results = parse(path)
    assert [(r.line, r.reason) for r in results if isinstance(r, Rejection)] == [
        (1, "Start without an address (Framed-IP-Address, Framed-IPv6-Prefix, Delegated-IPv6-Prefix)"),
        (6, "Interim-Update of a session not started in this file, without an address"),
        (18, "Stop at 2026-11-20T00:00:00+00:00 is before its session started (2026-11-20T01:02:00+00:00)"),
    ]
    [still_open] = [r for r in results if isinstance(r, SessionRecord)]
    assert still_open.username == "hn_3" and still_open.ended_at is None


def test_session_refs_fall_back_and_stay_within_64_characters(tmp_path: Path) -> None:
    long_id = "x" * 70
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name=" HN_User ",
                        Acct_Session_Id="S1", NAS_IP_Address="10.0.0.1", Framed_IP_Address="14.160.1.2"),
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="hn_2",
                        Acct_Unique_Session_Id=f'"{long_id}"', Framed_IP_Address="14.160.1.3"))
    short, hashed = parse(path)
    assert isinstance(short, SessionRecord) and isinstance(hashed, SessionRecord)
    assert (short.session_ref, short.username) == ("S1|10.0.0.1|HN_User", "HN_User")  # trimmed, case kept
    assert hashed.session_ref is not None and len(hashed.session_ref) == 64 and hashed.session_ref.startswith("#")


def test_stale_sessions_are_yielded_before_the_end_of_a_long_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lost Stops must not make memory grow with the file: a session silent for longer than the
    maximum age is yielded (still open, bounded) as soon as a sweep sees it, before the file ends."""
    monkeypatch.setattr(radius, "SWEEP_EVERY_RECORDS", 2)
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="lost", Acct_Session_Id="L",
                        Framed_IP_Address="14.160.1.2"),
                 *[record(f"Sat Nov 21 {hour:02d}:00:00 2026", Acct_Status_Type="Start", User_Name=f"u{hour}",
                          Acct_Session_Id=f"U{hour}", Framed_IP_Address=f"14.160.2.{hour}") for hour in range(10, 14)])
    results = parse_radius_detail(path, max_session_hours=24)
    [first] = itertools.islice(results, 1)  # yielded by the sweep after the 2nd record, not at the end
    assert isinstance(first, SessionRecord)
    assert (first.username, first.ended_at, first.open_until) == ("lost", None, utc(2026, 11, 21, 1))
    assert [r.username for r in results if isinstance(r, SessionRecord)] == ["u10", "u11", "u12", "u13"]


def test_unusable_files_and_zones_fail_whole(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty file"):
        parse(write(tmp_path, ""))
    with pytest.raises(InputError, match="unknown time zone"):
        parse(DAY_1, tz="Asia/Hanoi_Typo")


def test_two_days_of_detail_files_end_to_end(database_url: str, tmp_path: Path) -> None:
    """Through import_assignments (usernames → accounts): yesterday's open session is closed in place
    by today's Stop, both its IPv4 address and its delegated IPv6 prefix, on SQLite and PostgreSQL."""
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("account_id,full_name,usernames\nHN-1,Nguyễn Văn Ánh,hn_100089\n"
                           "HN-2,Trần Thị Bích,hn_100090;hn_100091;hn_100092;hn_100093;hn_100094\n", encoding="utf-8")
    with session_scope(database_url) as db:
        import_subscribers(db, subscribers, tz="Asia/Ho_Chi_Minh")
        day_1 = import_assignments(db, DAY_1, fmt="radius-detail", tz="Asia/Ho_Chi_Minh")
        day_2 = import_assignments(db, DAY_2, fmt="radius-detail", tz="Asia/Ho_Chi_Minh")
    assert (day_1.accepted, [e["line"] for e in day_1.errors]) == (7, [40, 44, 106])
    assert (day_2.accepted, day_2.rejected) == (2, 0)
    table = IpAssignment.__table__
    with session_scope(database_url) as db:
        rows = db.execute(sa.select(table.c.network, table.c.started_at, table.c.ended_at, table.c.covers_until)
                          .where(table.c.session_ref == "9c1f7e0a2b3d4c5e").order_by(table.c.network)).all()
    assert [tuple(row) for row in rows] == [
        ("14.160.1.2", utc(2026, 11, 20, 1), utc(2026, 11, 21), utc(2026, 11, 21)),
        (PREFIX, utc(2026, 11, 20, 1), utc(2026, 11, 21), utc(2026, 11, 21)),
    ]
