"""static-csv (fixed addresses and prefixes) and cgnat-csv (NAT port blocks): records and rejections."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.errors import InputError
from notifier.ingest.assignments import get_assignment_parser
from notifier.ingest.nat import STATIC_SINCE_EVER, normalise_network, parse_cgnat_csv, parse_static_csv
from notifier.ingest.records import NatEventRecord, Rejection, SessionRecord

DATA = Path(__file__).parent.parent / "data" / "identity"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def reasons(results: list[object]) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in results if isinstance(r, Rejection)]


def test_static_addresses_and_prefixes() -> None:
    """IPv4 address, IPv4 /29 held since ever, IPv6 /56 with both ends; local dates are +07."""
    results = list(parse_static_csv(DATA / "static.csv"))
    assert [r for r in results if isinstance(r, SessionRecord)] == [
        SessionRecord(2, "DN-200001", "203.113.130.10", utc(2024, 12, 31, 17)),
        SessionRecord(3, "DN-200002", "203.113.131.8/29", STATIC_SINCE_EVER),
        SessionRecord(4, "DN-200003", "2402:9d80:1a0::/56", utc(2026, 5, 31, 17), utc(2026, 12, 31, 16, 59, 59)),
        SessionRecord(7, "DN-200006", "203.113.132.1", utc(2026, 3, 1)),  # "/32" is the address itself
    ]
    assert reasons(results) == [
        (5, "prefix: not an IP network: '203.113.131.9/29' (203.113.131.9/29 has host bits set)"),
        (6, "until '2026-06-01' is before since '2026-07-01'"),
    ]
    assert STATIC_SINCE_EVER == utc(2000, 1, 1)


def test_static_csv_needs_since_and_until_columns(tmp_path: Path) -> None:
    """A file that lost its until column would make every assignment last for ever: refused whole."""
    path = tmp_path / "static.csv"
    path.write_text("account_id,prefix,since\nA1,203.113.130.10,2026-01-01\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing required column\(s\): until"):
        list(parse_static_csv(path))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("14.160.1.2", "14.160.1.2"),
        (" 14.160.1.2/32 ", "14.160.1.2"),
        ("14.160.1.0/24", "14.160.1.0/24"),
        ("2402:0800:6310:5600:0000::/56", "2402:800:6310:5600::/56"),
        ("2402:800:6310:5600::1/128", "2402:800:6310:5600::1"),
        ("::ffff:14.160.1.0/120", "14.160.1.0/24"),
        ("::ffff:14.160.1.2", "14.160.1.2"),
    ],
)
def test_networks_are_written_one_way(raw: str, expected: str) -> None:
    assert normalise_network(raw) == expected


@pytest.mark.parametrize("raw", ["14.160.1.1/24", "2402:800:6310:5601::/56", "14.160.1.0/33", "fe80::1%eth0", "x/8"])
def test_networks_that_are_typos_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not an IP"):
        normalise_network(raw)


def test_cgnat_log() -> None:
    results = list(parse_cgnat_csv(DATA / "cgnat.csv"))
    events = [r for r in results if isinstance(r, NatEventRecord)]
    assert events[:2] == [
        NatEventRecord(2, "alloc", utc(2026, 11, 20, 1), "100.64.0.10", "203.113.140.5", 1024, 2047),
        NatEventRecord(3, "alloc", utc(2026, 11, 20, 1, 0, 1), "100.64.0.11", "203.113.140.5", 2048, 3071),
    ]
    assert [(e.line, e.event) for e in events] == [
        (2, "alloc"), (3, "alloc"), (4, "alloc"), (5, "release"), (6, "alloc"), (7, "alloc"), (8, "release"),
        (9, "release"), (14, "release")]
    assert reasons(results) == [
        (10, "event: 'free' is not one of alloc, release"),
        (11, "port_end 1024 is below port_start 4096"),
        (12, "port_end: '70000' is not a port from 0 to 65535"),
        (13, "private_ip: not an IP address: '100.64.0.300'"),
    ]


def test_cgnat_gzip_any_case_and_explicit_zone(tmp_path: Path) -> None:
    path = tmp_path / "nat.csv.gz"
    path.write_bytes(gzip.compress(
        b"\xef\xbb\xbfTimestamp,Event,Private_IP,Public_IP,Port_Start,Port_End,Protocol\n"
        b"2026-11-20 08:00:00,ALLOC,100.64.0.10,::ffff:203.113.140.5,0,65535,udp\n"))
    [event] = parse_cgnat_csv(path, tz="UTC")
    assert event == NatEventRecord(2, "alloc", utc(2026, 11, 20, 8), "100.64.0.10", "203.113.140.5", 0, 65535)


def test_cgnat_needs_every_column(tmp_path: Path) -> None:
    path = tmp_path / "nat.csv"
    path.write_text("timestamp,event,private_ip,public_ip,port_start\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing required column\(s\): port_end"):
        list(parse_cgnat_csv(path))


def test_both_are_assignment_formats() -> None:
    assert get_assignment_parser("static-csv") is parse_static_csv
    assert get_assignment_parser("cgnat-csv") is parse_cgnat_csv
