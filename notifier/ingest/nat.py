"""Parse fixed assignments and CGNAT port-block logs (formats.md, "IP assignments").

`static-csv` lists addresses and prefixes an account holds for months (business lines, routed
IPv4 blocks, IPv6 delegations outside RADIUS); `cgnat-csv` is the carrier-grade NAT's log of which
private address was translated to which public address and port block, and when. Both are plain CSV
layouts read through `reader.parse_layout`, so gzip, BOMs, bad bytes and `line N: reason` behave as in
every other import.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from notifier.identifiers import LOCAL_TIMEZONE, network_keys, normalise_ip
from notifier.ingest.reader import Column, bounded_text, check_zone, extract, parse_layout, timestamp_in
from notifier.ingest.records import NatEventRecord, Rejection, SessionRecord
from notifier.ingest.subscribers import MAX_ACCOUNT_REF_CHARS, choice_of

# A static assignment whose `since` is empty has held its prefix "for ever": this is earlier than
# any event a feed can report (the first public abuse feeds date from the mid-2000s), and unlike
# datetime.min it converts to every zone a screen may show it in.
STATIC_SINCE_EVER = datetime(2000, 1, 1, tzinfo=UTC)
NAT_EVENTS = ("alloc", "release")
MIN_PORT, MAX_PORT = 0, 65535
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_SINGLE_ADDRESS_PREFIX = {4: 32, 6: 128}


def normalise_network(raw: str) -> str:
    """One address or a network as canonical text: "2402:0800:6310:5600::/56" → "2402:800:6310:5600::/56".

    Host bits must be zero (`identifiers.network_keys` refuses "14.160.1.5/29"). A /32 or /128 is
    written as the bare address, and an IPv4-mapped IPv6 network as the IPv4 network, so the same
    assignment spelt two ways is one interval, not two.
    """
    text = raw.strip()
    fast = canonical_ip_text(text)
    if fast is not None:
        return fast
    if "/" not in text:
        return normalise_ip(text)
    network_keys(text)  # the one validation of networks, with its reason
    network = ipaddress.ip_network(text, strict=True)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    if network.prefixlen == _SINGLE_ADDRESS_PREFIX[network.version]:
        return str(network.network_address)
    return network.compressed


def canonical_ip_text(text: str) -> str | None:
    """The canonical text of an address or network through C `inet_pton`/`inet_ntop`, or None when
    the general path (`ipaddress`) must decide, and give the reason if the text is wrong.

    RADIUS logs repeat an address or prefix in every record of a session; `ipaddress` costs
    several microseconds a call. Only plain cases take this path: a dotted quad or IPv6 text that
    `inet_pton` accepts (it refuses octal, short and scoped forms), a decimal prefix length written
    without a leading zero, host bits zero. IPv4-mapped and dotted IPv6 forms go the general way,
    which writes them differently from `inet_ntop`.
    """
    address, slash, length = text.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        packed = socket.inet_pton(family, address)
    except OSError:
        return None
    canonical = socket.inet_ntop(family, packed)
    if "." in canonical and family == socket.AF_INET6:
        return None
    if not slash:
        return canonical
    bits = len(packed) * 8
    if not length.isdecimal() or length != str(int(length)) or int(length) > bits:
        return None
    host_bits = bits - int(length)
    if int.from_bytes(packed, "big") & ((1 << host_bits) - 1):
        return None
    return canonical if host_bits == 0 else f"{canonical}/{length}"


def address_text(raw: str) -> str:
    """`identifiers.normalise_ip` (one address, never a network), fast for the plain forms logs repeat."""
    fast = None if "/" in raw else canonical_ip_text(raw.strip())
    return fast if fast is not None else normalise_ip(raw)


# --- static-csv ----------------------------------------------------------------------------------

def static_columns(tz: str) -> tuple[Column, ...]:
    """The static-csv layout; times without a zone are read in `tz`."""
    at = timestamp_in(tz)
    return (
        Column("account_ref", ("account_id",), bounded_text(MAX_ACCOUNT_REF_CHARS), required=True),
        Column("ip", ("prefix",), normalise_network, required=True),
        Column("started_at", ("since",), at, default=STATIC_SINCE_EVER),
        Column("ended_at", ("until",), at),
    )


def build_session(columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str) -> tuple[SessionRecord]:
    """The SessionRecord of a row of a session layout (static-csv here, sessions-csv in
    notifier.ingest.assignments): an end before the start is refused, named by the file's headers."""
    values = extract(row, columns)
    started, ended = cast(datetime, values["started_at"]), cast(datetime | None, values["ended_at"])
    if ended is not None and ended < started:
        since, until = _header_of(columns, "started_at"), _header_of(columns, "ended_at")
        raise ValueError(f"{until} {row[until]!r} is before {since} {row[since]!r}")
    return (SessionRecord(line=line, **values),)  # type: ignore[arg-type]


def _header_of(columns: tuple[Column, ...], target: str) -> str:
    return next(column.sources[0] for column in columns if column.target == target)


def parse_static_csv(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[SessionRecord | Rejection]:
    """Yield a SessionRecord per `account_id,prefix,since,until` row.

    `prefix` is an IPv4/IPv6 address or network with its host bits zero. An empty `since` means the
    account has held it since ever (STATIC_SINCE_EVER, 2000-01-01 UTC); an empty `until` means it still
    does. Both columns must be in the header even when their cells are empty, so that a file which
    lost a column is refused instead of turning every row into a for-ever assignment.
    """
    path = Path(path)
    check_zone(path, tz)
    yield from parse_layout(path, static_columns(tz), build_session, required=("since", "until"))  # type: ignore[misc]


# --- cgnat-csv -----------------------------------------------------------------------------------

def port_number(text: str) -> int:
    """A TCP/UDP port, 0–65535."""
    if not text.isdecimal() or not MIN_PORT <= int(text) <= MAX_PORT:
        raise ValueError(f"{text!r} is not a port from {MIN_PORT} to {MAX_PORT}")
    return int(text)


def cgnat_columns(tz: str) -> tuple[Column, ...]:
    """The cgnat-csv layout; times without a zone are read in `tz`."""
    return (
        Column("at", ("timestamp",), timestamp_in(tz), required=True),
        Column("event", ("event",), choice_of(NAT_EVENTS), required=True),
        Column("private_ip", ("private_ip",), address_text, required=True),
        Column("public_ip", ("public_ip",), address_text, required=True),
        Column("port_start", ("port_start",), port_number, required=True),
        Column("port_end", ("port_end",), port_number, required=True),
    )


def _build_nat_event(columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str) -> tuple[NatEventRecord]:
    values = extract(row, columns)
    if cast(int, values["port_end"]) < cast(int, values["port_start"]):
        raise ValueError(f"port_end {row['port_end']} is below port_start {row['port_start']}")
    return (NatEventRecord(line=line, **values),)  # type: ignore[arg-type]


def parse_cgnat_csv(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[NatEventRecord | Rejection]:
    """Yield a NatEventRecord per `timestamp,event,private_ip,public_ip,port_start,port_end` row.

    `event` is `alloc` or `release` (any case); ports are 0–65535 with port_start ≤ port_end.
    """
    path = Path(path)
    check_zone(path, tz)
    yield from parse_layout(path, cgnat_columns(tz), _build_nat_event)  # type: ignore[misc]
