"""Parse security feeds into FeedEventRecords (formats.md, "Security feeds").

Shadowserver publishes dozens of report types that differ only in which header names the host and
what kind of harm it reports. Each type is therefore one row of data (`ReportLayout`) turned into a
column map, and a single builder serves them all; a new report type is a new table entry.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from notifier.errors import InputError
from notifier.identifiers import LOCAL_TIMEZONE, normalise_identifier
from notifier.ingest.reader import (
    Column,
    bounded_text,
    check_zone,
    extract,
    parse_layout,
    split_list,
    timestamp_in,
    unique,
)
from notifier.ingest.records import DATE_PRECISION, FeedEventRecord, Parser, Rejection, bound_raw, find_parser

INFECTED_DEVICE = "infected_device"
DATA_LEAK = "data_leak"
MAX_PORT = 65535
MAX_LABEL_CHARS = 100  # threat names, data classes
MAX_CATEGORY_CHARS = 64
MAX_SOURCE_CHARS = 100
THREAT_HEADERS = ("family", "infection", "tag")  # the threat is the first non-empty of these
SHADOWSERVER_NAME = re.compile(r"\d{4}-\d{2}-\d{2}-([a-z0-9_]+)(?:[-.]|$)")
LEAK_IDENTIFIERS = ("msisdn", "email", "msisdn_sha256", "email_sha256")
DAY_FIRST_DATE = "%d/%m/%Y"  # the date-only form Vietnamese spreadsheets use (19/11/2026)


def port_number(text: str) -> int:
    if not text.isdecimal() or int(text) > MAX_PORT:
        raise ValueError(f"not a port number: {text!r}")
    return int(text)


def label(text: str) -> str:
    """A short lower-case tag (a data class): feeds are inconsistent about case."""
    return bounded_text(MAX_LABEL_CHARS)(text).lower()


def category_name(text: str) -> str:
    """A lower-case category such as an IoT device type ("Camera" → "camera")."""
    return bounded_text(MAX_CATEGORY_CHARS)(text).lower()


def data_class_list(text: str) -> tuple[str, ...]:
    return unique(label(item) for item in split_list(text))


def time_precision(text: str) -> str | None:
    """DATE_PRECISION when a time cell holds only a day (`2026-11-02`, `20261102`, `02/11/2026`),
    else None: a leak list often knows the day of a leak and nothing finer, and a notice must not
    print the midnight the parser had to pick as "00:00"."""
    value = text.strip()
    try:
        date.fromisoformat(value)
        return DATE_PRECISION
    except ValueError:
        pass
    try:
        datetime.strptime(value, DAY_FIRST_DATE)
        return DATE_PRECISION
    except ValueError:
        return None


# --- Shadowserver --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportLayout:
    """What one Shadowserver report type says and where: the data behind its column map."""

    identifier_kind: str  # "ip" or "email"
    identifier: str  # header naming the infected host or leaked account
    port: str | None  # header with the source port (lets CGNAT be resolved), if the report has one
    category: str  # used when no `category_from` header has a value
    category_from: tuple[str, ...] = ()
    kind: str = INFECTED_DEVICE
    data_classes: tuple[str, ...] = ()
    source_from: tuple[str, ...] = ()


SINKHOLE = ReportLayout("ip", "src_ip", "src_port", "botnet")
REPORT_LAYOUTS: dict[str, ReportLayout] = {
    "event4_sinkhole": SINKHOLE,
    "event4_sinkhole_http": SINKHOLE,
    "event6_sinkhole": SINKHOLE,
    "event6_sinkhole_http": SINKHOLE,
    "event4_microsoft_sinkhole": SINKHOLE,
    "event4_microsoft_sinkhole_http": SINKHOLE,
    "botnet_drone": ReportLayout("ip", "ip", "port", "botnet"),
    "compromised_iot": ReportLayout("ip", "ip", "port", "iot", category_from=("device_type",)),
    "compromised_account": ReportLayout(
        "email", "email", None, "compromised_account",
        kind=DATA_LEAK, data_classes=("password",), source_from=("service",),
    ),
}


def report_identifier(kind: str, text: str) -> str:
    """`normalise_identifier`, with a shortcut for the usual sinkhole cell: an IPv4 address already
    in canonical form. `ipaddress` costs a few microseconds per address (a tenth of a feed row's
    import); the C `inet_pton`/`inet_ntop` round trip costs a fraction of that, and text it gives
    back unchanged is exactly what `normalise_ip` would return. Anything else takes the full path."""
    if kind == "ip":
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
                return text
        except (OSError, ValueError):
            pass
    return normalise_identifier(kind, text)


def report_columns(layout: ReportLayout, tz: str) -> tuple[Column, ...]:
    """Turn a report layout into the column map the shared builder applies to each row."""
    return (
        Column("identifier", (layout.identifier,),
               functools.partial(report_identifier, layout.identifier_kind), required=True),
        Column("port", (layout.port,) if layout.port else (), port_number),
        Column("seen_at", ("timestamp",), timestamp_in(tz), required=True),
        Column("threat", THREAT_HEADERS, bounded_text(MAX_LABEL_CHARS)),
        Column("category", layout.category_from, category_name, default=layout.category),
        Column("source", layout.source_from, bounded_text(MAX_SOURCE_CHARS)),
    )


def report_type_of(path: Path, report_type: str | None) -> str:
    """The report type given explicitly, else the one in a Shadowserver file name.

    The explicit value wins: an operator who states the type knows better than a renamed file.
    """
    name = report_type
    if not name:
        match = SHADOWSERVER_NAME.match(path.name.lower())
        if match is None:
            raise InputError(
                f"{path}: cannot tell the Shadowserver report type from the file name "
                "(expected YYYY-MM-DD-<report_type>-….csv); give the report type explicitly"
            )
        name = match.group(1)
    if name not in REPORT_LAYOUTS:
        raise InputError(
            f"{path}: unknown Shadowserver report type {name!r} (known: {', '.join(REPORT_LAYOUTS)})"
        )
    return name


def _build_report_event(
    layout: ReportLayout, columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str
) -> tuple[FeedEventRecord]:
    record = FeedEventRecord(
        line=line, identifier_kind=layout.identifier_kind, kind=layout.kind,
        data_classes=layout.data_classes, raw=bound_raw(raw), **extract(row, columns),  # type: ignore[arg-type]
    )
    return (record,)


def parse_shadowserver(
    path: Path | str, *, report_type: str | None = None, tz: str = "UTC"
) -> Iterator[FeedEventRecord | Rejection]:
    """Yield one event per row of a Shadowserver report (times are UTC unless `tz` says otherwise)."""
    path = Path(path)
    check_zone(path, tz)
    layout = REPORT_LAYOUTS[report_type_of(path, report_type)]
    build = functools.partial(_build_report_event, layout)
    yield from parse_layout(path, report_columns(layout, tz), build)  # type: ignore[misc]


# --- leak lists ----------------------------------------------------------------------------------

def leak_columns(tz: str) -> tuple[Column, ...]:
    """The optional columns of a leak list; the identifiers are handled one by one in the builder."""
    return (
        Column("seen_at", ("leaked_at",), timestamp_in(tz)),
        Column("seen_precision", ("leaked_at",), time_precision),
        Column("source", ("source",), bounded_text(MAX_SOURCE_CHARS)),
        Column("threat", ("source",), bounded_text(MAX_LABEL_CHARS)),  # the leak is the threat
        Column("data_classes", ("data_classes",), data_class_list, default=()),
    )


def _build_leak_events(
    columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str
) -> Iterator[FeedEventRecord | Rejection]:
    """One event per identifier in the row (each is matched on its own; the row's shared `line`
    makes them one sighting when they reach the same account); a bad identifier rejects itself,
    not its neighbours."""
    values = extract(row, columns)
    present = [kind for kind in LEAK_IDENTIFIERS if row.get(kind)]
    if not present:
        raise ValueError(f"no identifier: {', '.join(LEAK_IDENTIFIERS)} all empty")
    for kind in present:
        try:
            identifier = normalise_identifier(kind, row[kind])
        except ValueError as exc:
            yield Rejection(line, f"{kind}: {exc}", bound_raw(raw))
            continue
        yield FeedEventRecord(
            line=line, identifier_kind=kind, identifier=identifier, port=None,
            category=DATA_LEAK, kind=DATA_LEAK, raw=bound_raw(raw),
            **values,  # type: ignore[arg-type]
        )


def parse_leak_csv(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[FeedEventRecord | Rejection]:
    """Yield data-leak events from a list naming people by phone, e-mail or their SHA-256 hashes."""
    path = Path(path)
    check_zone(path, tz)
    yield from parse_layout(path, leak_columns(tz), _build_leak_events, one_of=LEAK_IDENTIFIERS)  # type: ignore[misc]


# --- Authority requests --------------------------------------------------------------------------

def parse_ais_json(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[FeedEventRecord | Rejection]:
    """An Authority request (`ais-request/1`): see `notifier.ingest.ais`, imported here on use
    because it builds on this module's helpers."""
    from notifier.ingest.ais import parse_ais_json as parse

    return parse(path, tz=tz)


FEED_FORMATS: dict[str, Parser] = {
    "shadowserver": parse_shadowserver, "leak-csv": parse_leak_csv, "ais-json": parse_ais_json,
}


def get_feed_parser(name: str) -> Parser:
    """The parser registered for a feed format name; InputError for an unknown one."""
    return find_parser(FEED_FORMATS, name)
