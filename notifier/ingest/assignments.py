"""Parse IP assignment sources: which account used which address when (formats.md, "IP assignments").

Only `sessions-csv` lives here; other formats register in ASSIGNMENT_FORMATS under their name, so
the CLI finds every parser through one registry.

The store takes `AssignmentRow`s: a record with its address already keyed (`assignment_row`).
`sessions-csv` also has a fast reader (`sessions_csv_rows`, listed in FAST_ASSIGNMENT_FORMATS): an
operator's session log is tens of millions of plain lines a day, and the general reader spends most
of its time on what such lines never need (quotes, NFC, `ipaddress`, zone lookups). The fast reader
takes a line only when it is plain (ASCII, no quote, right number of fields, canonical dotted quad,
`YYYY-MM-DD hh:mm:ss` times in a range where the zone's offset is known for the whole hour); every
other line goes through exactly the code `parse_sessions_csv` runs, so both give the same rows and
the same rejections (a test compares them).
"""

from __future__ import annotations

import csv
import functools
import io
import socket
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import NamedTuple

from notifier.errors import InputError
from notifier.identifiers import (
    LOCAL_TIMEZONE,
    get_zone,
    mapped_prefix_len,
    network_keys,
    normalise_ip,
    stored_ip_key,
)
from notifier.ingest.reader import (
    UTF8_BOM,
    Column,
    _check_header,
    _open_stream,
    _read_header,
    bounded_text,
    check_zone,
    parse_layout,
    read_record,
    required_headers,
    timestamp_in,
)
from notifier.ingest.nat import build_session, parse_cgnat_csv, parse_static_csv
from notifier.ingest.radius import parse_radius_detail
from notifier.ingest.records import Parser, Rejection, SessionRecord, bound_raw, find_parser
from notifier.ingest.subscribers import MAX_ACCOUNT_REF_CHARS, MAX_USERNAME_CHARS
from notifier.models import SINGLE_ADDRESS


def session_columns(tz: str) -> tuple[Column, ...]:
    """The sessions-csv layout; times without a zone are read in `tz`."""
    at = timestamp_in(tz)
    return (
        Column("account_ref", ("account_id",), bounded_text(MAX_ACCOUNT_REF_CHARS), required=True),
        Column("ip", ("ip",), normalise_ip, required=True),
        Column("started_at", ("start",), at, required=True),
        Column("ended_at", ("end",), at),
        Column("username", ("username",), bounded_text(MAX_USERNAME_CHARS)),
    )


# "end" must be in the header even though its cells may be empty: a file without the column would
# otherwise turn every session into one that never ends.
ALSO_REQUIRED = ("end",)


def parse_sessions_csv(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[SessionRecord | Rejection]:
    """Yield a SessionRecord per `account_id,ip,start,end[,username]` row; an empty end = still open."""
    path = Path(path)
    check_zone(path, tz)
    yield from parse_layout(path, session_columns(tz), build_session, required=ALSO_REQUIRED)  # type: ignore[misc]


# --- rows for the store ----------------------------------------------------------------------------

_IPV4_KEY_PREFIX = "00000000000000000000ffff"  # ip_key of an IPv4 address: ::ffff:0:0/96 + 8 hex digits


class AssignmentRow(NamedTuple):
    """One interval ready to store: a record's account, times and address keyed as `ip_key` bounds.

    A tuple rather than a dataclass: the fast reader makes ten million of them per benchmark run.
    `network` is the address or network text as the parser normalised it.
    """

    line: int
    account_ref: str | None
    username: str | None
    network: str
    range_start: str
    range_end: str
    prefix_len: int
    started_at: datetime
    ended_at: datetime | None
    open_until: datetime | None = None
    session_ref: str | None = None


def assignment_row(record: SessionRecord) -> AssignmentRow:
    """Key a parsed record's address (`ip_key`, prefix 128) or network (`network_keys`, its prefix
    length in the 128-bit space); ValueError "ip: …" when the text is neither."""
    try:
        if "/" in record.ip:
            start, end = network_keys(record.ip)
            prefix_len = mapped_prefix_len(record.ip)
        else:
            start = end = stored_ip_key(record.ip)
            prefix_len = SINGLE_ADDRESS
    except ValueError as exc:
        raise ValueError(f"ip: {exc}") from None
    return AssignmentRow(record.line, record.account_ref, record.username, record.ip, start, end, prefix_len,
                         record.started_at, record.ended_at, record.open_until, record.session_ref)


def sessions_csv_general_rows(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[AssignmentRow | Rejection]:
    """`parse_sessions_csv` turned into rows: the reference the fast reader must equal."""
    for item in parse_sessions_csv(path, tz=tz):
        yield item if isinstance(item, Rejection) else assignment_row(item)


# --- the sessions-csv fast reader ------------------------------------------------------------------

# Years whose `YYYY-MM-DD` text the fast path converts itself: well inside what `parse_timestamp`
# accepts, so its range check can never refuse them. Others take the general path.
_FAST_YEARS = range(1900, 9000)
_MAX_CACHED_HOURS = 100_000  # ~11 years of distinct hours; the cache is emptied past it
_LAST_SECOND_OF_HOUR = timedelta(minutes=59, seconds=59)
_ONE_HOUR = timedelta(hours=1)
_MAX_CACHED_ADDRESSES = 250_000


class _HourOffsets:
    """UTC times of `YYYY-MM-DD hh:mm:ss` text in the zone, one zone lookup per local hour.

    `naive.replace(tzinfo=zone).astimezone(UTC)` costs a zone lookup per call; one lookup per hour
    of the log does the same when the offset is the same at the hour's first and last second (fold
    0, as `parse_timestamp` uses). An hour holding a transition is not cached: its times take the
    general path. When the offset is whole hours (most zones), the hour's UTC text is kept and a
    time is read straight from that text plus its own minutes and seconds: one `fromisoformat`
    instead of parsing, subtracting and re-zoning (1.4 → 0.4 µs a time, two per line).
    """

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        # local hour text → its UTC hour text (whole-hour offset), its offset (other offsets), or
        # None (an hour the general path must decide: a transition or a year outside _FAST_YEARS)
        self._hours: dict[str, str | timedelta | None] = {}

    def to_utc(self, text: str) -> datetime | None:
        """Aware UTC time of a plain local timestamp, or None when the general path must decide."""
        if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":" \
                or text[10] not in " T":
            return None
        hour = text[:13]
        utc_hour = self._hours.get(hour, False)
        if utc_hour is False:
            utc_hour = self._hour(hour)
        try:
            if type(utc_hour) is str:
                return datetime.fromisoformat(f"{utc_hour}{text[13:]}+00:00")
            if utc_hour is None:
                return None
            return (datetime.fromisoformat(text) - utc_hour).replace(tzinfo=UTC)
        except ValueError:  # minutes or seconds out of range, or not digits
            return None

    def _hour(self, hour: str) -> str | timedelta | None:
        """Work out and remember what `to_utc` needs for one local hour (`YYYY-MM-DD hh`)."""
        try:
            naive = datetime.fromisoformat(f"{hour}:00:00")
        except ValueError:
            entry: str | timedelta | None = None
        else:
            entry = self._hour_offset(naive) if naive.year in _FAST_YEARS else None
            if isinstance(entry, timedelta) and not entry % _ONE_HOUR:
                entry = (naive - entry).isoformat(" ")[:13]
        if len(self._hours) >= _MAX_CACHED_HOURS:
            self._hours.clear()
        self._hours[hour] = entry
        return entry

    def _hour_offset(self, naive: datetime) -> timedelta | None:
        first = naive.replace(tzinfo=self._zone).utcoffset()
        last = (naive + _LAST_SECOND_OF_HOUR).replace(tzinfo=self._zone).utcoffset()
        return first if first == last else None


def _ipv4_key(text: str) -> str | None:
    """ip_key of a canonical dotted quad, None for anything else. `inet_pton` is strict (four
    decimal octets, no leading zeros), so what it takes is exactly what `normalise_ip` keeps as is."""
    try:
        return _IPV4_KEY_PREFIX + socket.inet_pton(socket.AF_INET, text).hex()
    except (OSError, UnicodeEncodeError, ValueError):
        return None


class _IpKeys(dict[str, str | None]):
    """`_ipv4_key` per address text, remembered: a log names the same addresses again and again.
    Bounded: emptied past _MAX_CACHED_ADDRESSES entries (~40 MB)."""

    def __missing__(self, text: str) -> str | None:
        if len(self) >= _MAX_CACHED_ADDRESSES:
            self.clear()
        key = self[text] = _ipv4_key(text)
        return key


class _Lines:
    """Physical lines of the decoded file, counted, with the text of the current row kept for the
    general path (which rereads a line the fast path gave up on, and the lines a quoted field spans)."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text = text
        self._pending: list[str] = []
        self.number = 0
        self.consumed: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._pending.pop() if self._pending else next(self._text)
        if self.number == 0:
            line = line.removeprefix(UTF8_BOM)
        self.number += 1
        self.consumed.append(line)
        return line

    def push_back(self, line: str) -> None:
        """Give a line the fast path read back to the general path, as the next one to read."""
        self.number -= 1
        self._pending.append(line)

    def take_raw(self) -> str:
        raw = "".join(self.consumed).rstrip("\r\n")
        self.consumed.clear()
        return raw


class _SessionLayout:
    """Where the sessions-csv columns are in this file's header, and the general row builder."""

    def __init__(self, header: list[str], shown: list[str], tz: str) -> None:
        self.header, self.shown, self.width = header, shown, len(header)
        self.account = header.index("account_id")
        self.ip, self.start, self.end = header.index("ip"), header.index("start"), header.index("end")
        self.username = header.index("username") if "username" in header else None
        self.build = functools.partial(build_session, session_columns(tz))


def sessions_csv_rows(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[AssignmentRow | Rejection]:
    """The rows `sessions_csv_general_rows` gives, read several times faster (module docstring)."""
    path = Path(path)
    check_zone(path, tz)
    columns = session_columns(tz)
    with _open_stream(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="\n")
        lines = _Lines(text)
        try:
            header, shown = _read_header(csv.reader(lines), path, {})
            _check_header(path, header, (*required_headers(columns), *ALSO_REQUIRED), ())
            yield from _session_rows(lines, text, _SessionLayout(header, shown, tz), _HourOffsets(get_zone(tz)))
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: damaged gzip file ({exc})") from None


def _session_rows(lines: _Lines, text: io.TextIOWrapper, layout: _SessionLayout,
                  hours: _HourOffsets) -> Iterator[AssignmentRow | Rejection]:
    """The fast loop: plain lines become rows here; any other line goes to `_general_row`."""
    lines.consumed.clear()
    number = lines.number
    width, i_account, i_ip, i_start, i_end, i_user = (layout.width, layout.account, layout.ip, layout.start,
                                                      layout.end, layout.username)
    to_utc, ip_keys = hours.to_utc, _IpKeys()
    for line in text:
        number += 1
        body = line.rstrip("\r\n")
        fields = body.split(",")
        row = None
        if len(fields) == width and body.isascii() and '"' not in body and "\r" not in body \
                and "\x00" not in body:
            row = _plain_row(number, fields, i_account, i_ip, i_start, i_end, i_user, to_utc, ip_keys)
        if row is not None:
            yield row
            continue
        lines.number = number
        lines.push_back(line)
        yield from _general_row(lines, layout)
        number = lines.number


def _plain_row(number: int, fields: list[str], i_account: int, i_ip: int, i_start: int, i_end: int,
               i_user: int | None, to_utc: Callable[[str], datetime | None],
               ip_keys: _IpKeys) -> AssignmentRow | None:
    """The row of a plain line, or None when anything in it is unusual (the general path decides)."""
    account, ip, start, end = fields[i_account].strip(), fields[i_ip].strip(), fields[i_start].strip(), \
        fields[i_end].strip()
    username = fields[i_user].strip() or None if i_user is not None else None
    if not account or len(account) > MAX_ACCOUNT_REF_CHARS or (username and len(username) > MAX_USERNAME_CHARS):
        return None
    key = ip_keys[ip]
    started = to_utc(start)
    if key is None or started is None:
        return None
    ended = None
    if end:
        ended = to_utc(end)
        if ended is None or ended < started:
            return None
    return AssignmentRow(number, account, username, ip, key, key, SINGLE_ADDRESS, started, ended)


def _general_row(lines: _Lines, layout: _SessionLayout) -> Iterator[AssignmentRow | Rejection]:
    """One CSV record (one or more physical lines), judged by `reader.read_record` as `read_rows`
    judges it and built as `parse_sessions_csv` builds it: skipped when blank, else a row or a
    Rejection with their reason."""
    try:
        item = read_record(csv.reader(lines), lines.take_raw, lines.number + 1, layout.header, layout.shown)
    except StopIteration:
        return
    if item is None:
        return
    if isinstance(item, Rejection):
        yield item
        return
    start, row, raw = item
    try:
        [record] = layout.build(start, row, raw)
        yield assignment_row(record)
    except ValueError as exc:
        yield Rejection(start, str(exc), bound_raw(raw))


ASSIGNMENT_FORMATS: dict[str, Parser] = {
    "sessions-csv": parse_sessions_csv,
    "radius-detail": parse_radius_detail,
    "static-csv": parse_static_csv,
    "cgnat-csv": parse_cgnat_csv,
}


# Formats with a reader that yields AssignmentRow directly (faster than records + assignment_row).
FAST_ASSIGNMENT_FORMATS = {"sessions-csv": sessions_csv_rows}


def get_assignment_parser(name: str) -> Parser:
    """The parser registered for an assignment format name; InputError for an unknown one."""
    return find_parser(ASSIGNMENT_FORMATS, name)
