"""sessions-csv: which account held which address when; zones, open sessions and broken rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.errors import InputError
from notifier.ingest.assignments import ASSIGNMENT_FORMATS, get_assignment_parser, parse_sessions_csv
from notifier.ingest.records import Rejection, SessionRecord


def write(tmp_path: Path, content: str | bytes, name: str = "sessions.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def parse(path: Path, **kwargs: object) -> list[SessionRecord | Rejection]:
    return list(parse_sessions_csv(path, **kwargs))  # type: ignore[arg-type]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_sessions_in_local_time_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "account_id,ip,start,end,username\n"
        "HN-1,14.160.1.2,2026-11-20 08:00:00,2026-11-20 20:00:00,hn_1\n"
        "HN-2,2402:0800:6310:5600::1,19/11/2026 21:14:05,,\n"
        "HN-3,::ffff:14.160.1.3,2026-11-20T01:00:00Z,1795161600,\n"
    ))
    assert parse(path) == [
        SessionRecord(2, "HN-1", "14.160.1.2", utc(2026, 11, 20, 1), utc(2026, 11, 20, 13), "hn_1"),
        SessionRecord(3, "HN-2", "2402:800:6310:5600::1", utc(2026, 11, 19, 14, 14, 5), None, None),
        SessionRecord(4, "HN-3", "14.160.1.3", utc(2026, 11, 20, 1), utc(2026, 11, 20, 8), None),
    ]


def test_declared_zone_and_reordered_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffEnd,Start,NAS,IP,Account_ID\n,2026-11-20 08:00:00,nas1,14.160.1.2,A1\n")
    [record] = parse(path, tz="UTC")
    assert record == SessionRecord(2, "A1", "14.160.1.2", utc(2026, 11, 20, 8), None, None)


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ("A1,14.160.1.300,2026-11-20 08:00,", "ip: not an IP address: '14.160.1.300'"),
        ("A1,14.160.1.0/24,2026-11-20 08:00,", "ip: not an IP address: '14.160.1.0/24' (a network"),
        ("A1,14.160.1.2,20/13/2026 08:00,", "start: not a time: '20/13/2026 08:00'"),
        ("A1,14.160.1.2,,", "empty start"),
        ("A1,14.160.1.2,2026-11-20 08:00,soon", "end: not a time: 'soon'"),
        ("A1,14.160.1.2,2026-11-20 08:00,2026-11-20 07:59",
         "end '2026-11-20 07:59' is before start '2026-11-20 08:00'"),
        (",14.160.1.2,2026-11-20 08:00,", "empty account_id"),
    ],
)
def test_broken_rows_are_rejected_with_reasons(tmp_path: Path, cells: str, reason: str) -> None:
    path = write(tmp_path, "account_id,ip,start,end\nA0,1.1.1.1,2026-11-20 07:00,\n" + cells + "\n")
    good, bad = parse(path)
    assert isinstance(good, SessionRecord) and good.line == 2
    assert isinstance(bad, Rejection) and bad.line == 3 and bad.reason.startswith(reason), bad.reason


def test_wrong_encoding_row_does_not_stop_the_file(tmp_path: Path) -> None:
    content = b"account_id,ip,start,end\nA\xe9,1.1.1.1,2026-11-20 07:00,\nA2,1.1.1.2,2026-11-20 07:00,\n"
    bad, good = parse(write(tmp_path, content))
    assert isinstance(bad, Rejection) and bad.line == 2 and "not valid UTF-8" in bad.reason
    assert isinstance(good, SessionRecord) and good.account_ref == "A2"


def test_the_end_column_is_required_even_though_it_may_be_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sessions\.csv: missing required column\(s\): end"):
        parse(write(tmp_path, "account_id,ip,start\nA1,1.1.1.1,2026-11-20 07:00\n"))


def test_registry() -> None:
    assert get_assignment_parser("sessions-csv") is parse_sessions_csv
    assert ASSIGNMENT_FORMATS["sessions-csv"] is parse_sessions_csv
    with pytest.raises(InputError, match=r"unknown format 'radius' \(known: .*sessions-csv"):
        get_assignment_parser("radius")
