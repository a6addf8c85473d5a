"""Parse FreeRADIUS accounting `detail` files into sessions (formats.md, "IP assignments").

A detail file is a stream of records: a date line, tab-indented `Attribute = value` lines, a blank
line. The BRAS sends Start when a subscriber connects, Interim-Update every few minutes, Stop when
the session ends; a day's file holds the Starts of sessions that stop tomorrow and the Stops of
sessions that started yesterday. This parser follows sessions through one file and yields one
`SessionRecord` per address a session used, when the session ends (Stop, a new Start on its address,
the NAS rebooting) or, still open, at the end of the file with `open_until` bounding it. The
session id travels as `session_ref`, so the importer can close a row from yesterday's file with
today's Stop. Memory holds the sessions open at once, never the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

from notifier.identifiers import LOCAL_TIMEZONE, get_zone, parse_timestamp
from notifier.ingest.nat import address_text, normalise_network
from notifier.ingest.reader import bounded_text, check_zone, read_text_lines
from notifier.ingest.records import Rejection, SessionRecord, bound_raw
from notifier.ingest.subscribers import MAX_USERNAME_CHARS

MAX_SESSION_REF_CHARS = 64  # ip_assignment.session_ref
HASHED_REF_MARK = "#"  # a hashed key starts with it, so it cannot equal a real id of 64 characters
ATTRIBUTE_SEPARATOR = " = "
EMPTY_VALUE_END = " ="
MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
# Zone names FreeRADIUS may print in Event-Timestamp (strftime %Z). Numeric offsets ("+07") are read
# as such; any other abbreviation is refused rather than guessed.
ZONE_ABBREVIATIONS: dict[str, tzinfo] = {
    "UTC": UTC, "GMT": UTC, "Z": UTC, "ICT": timezone(timedelta(hours=7)),
}
# Addresses a NAS writes when it has none to report: storing them would give every subscriber the
# same "address".
UNSPECIFIED_ADDRESSES = frozenset({"0.0.0.0", "::"})


ADDRESS_ATTRIBUTES = (
    ("Framed-IP-Address", address_text),
    ("Framed-IPv6-Prefix", normalise_network),
    ("Delegated-IPv6-Prefix", normalise_network),
)
START, INTERIM, STOP = "Start", "Interim-Update", "Stop"
STATUS_ALIASES = {"Start": START, "Interim-Update": INTERIM, "Alive": INTERIM, "Stop": STOP}
NAS_RESTARTS = frozenset({"Accounting-On", "Accounting-Off"})
# Every this many records, sessions silent for longer than the maximum age are yielded (still
# open, bounded by open_until) and forgotten, so lost Stops do not make memory grow with the file.
SWEEP_EVERY_RECORDS = 50_000

# The attributes this parser reads; a record carries a dozen more (octets, ports, causes) that are
# skipped at once, so a runaway block cannot grow the dict either.
READ_ATTRIBUTES = frozenset({
    "Acct-Status-Type", "User-Name", "Acct-Session-Id", "Acct-Unique-Session-Id", "NAS-IP-Address",
    "NAS-Identifier", "Event-Timestamp", "Timestamp", "Acct-Delay-Time", "Acct-Session-Time",
    *(name for name, _ in ADDRESS_ATTRIBUTES),
})
MAX_RAW_LINES = 64  # of a block kept for its rejection (then cut to MAX_RAW_CHARS)

_check_username = bounded_text(MAX_USERNAME_CHARS)


# --- reading blocks ------------------------------------------------------------------------------

@dataclass
class _Block:
    """One record as written: its date line's number and time, its attributes, or what is wrong."""

    line: int
    logged_at: datetime | None
    attributes: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    raw: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        """Remember the first thing wrong; the block is rejected once it is complete."""
        if self.problem is None:
            self.problem = reason

    def add_attribute(self, name: str, value: str) -> None:
        """Keep the first value of each attribute this parser reads; the others are skipped."""
        if name in READ_ATTRIBUTES and name not in self.attributes:
            self.attributes[name] = _unquote(value.strip())

    def add_unusual_line(self, number: int, text: str) -> None:
        """An indented line without " = " inside: "Name =" (an empty value) or a garbled line."""
        stripped = text.rstrip()
        name = stripped[:-len(EMPTY_VALUE_END)].strip() if stripped.endswith(EMPTY_VALUE_END) else ""
        if name:
            self.add_attribute(name, "")
        else:
            self.fail(f"line {number}: expected 'Attribute = value'")

    def rejection(self, reason: str) -> Rejection:
        return Rejection(self.line, reason, bound_raw("\n".join(self.raw)))


def _unquote(value: str) -> str:
    """A value as FreeRADIUS quotes strings: "…" with \\" and \\\\ escaped."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _blocks(path: Path, zone: tzinfo) -> Iterator[_Block]:
    """Records of a detail file, one block per date line; blank lines separate them.

    Attribute lines with no date line before them (a file cut mid-record, a mangled date) become a
    block of their own that is rejected at its first line, so the next good record is unaffected.
    """
    block: _Block | None = None
    for number, text, problem in read_text_lines(path):
        if not text or text.isspace():
            if block is not None:
                yield block
                block = None
            continue
        if text[0] in " \t":
            if block is None:
                block = _Block(number, None, problem="attribute lines without a date line before them")
            name, separator, value = text.partition(ATTRIBUTE_SEPARATOR)
            name = name.strip()
            if separator and name:
                block.add_attribute(name, value)
            else:
                block.add_unusual_line(number, text)
        else:
            if block is not None:
                yield block
            block = _Block(number, None)
            try:
                block.logged_at = _date_line(text, zone)
            except ValueError as exc:
                block.fail(str(exc))
        if len(block.raw) < MAX_RAW_LINES:
            block.raw.append(text)
        if problem:
            block.fail(f"line {number}: {problem}")
    if block is not None:
        yield block


def _date_line(text: str, zone: tzinfo) -> datetime:
    """ "Fri Nov 20 08:00:00 2026" in the source's zone → UTC."""
    parts = text.split()
    try:
        _weekday, month, day, clock, year = parts
        hour, minute, second = (int(part) for part in clock.split(":"))
        local = datetime(int(year), MONTHS[month], int(day), hour, minute, second, tzinfo=zone)
    except (ValueError, KeyError):
        raise ValueError(f"not a FreeRADIUS date line: {text.strip()[:40]!r}") from None
    return local.astimezone(UTC)


# --- reading values ------------------------------------------------------------------------------

def _zone_of(text: str) -> tzinfo:
    """ "+07", "+0700", "+07:00", "-0530", "UTC", "ICT" → a fixed zone; ValueError otherwise."""
    known = ZONE_ABBREVIATIONS.get(text.upper())
    if known is not None:
        return known
    digits = text[1:].replace(":", "")
    if text[:1] not in "+-" or not digits.isdecimal() or len(digits) not in (2, 4):
        raise ValueError(f"unknown zone {text!r}")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return timezone(-offset if text[0] == "-" else offset)


def _event_timestamp(text: str, tz: str) -> datetime:
    """Event-Timestamp as FreeRADIUS writes it ("Nov 20 2026 08:00:00 +07"), else ISO 8601 or Unix
    seconds; a time without a zone is in the source's zone `tz`."""
    parts = text.split()
    if len(parts) in (4, 5) and parts[0] in MONTHS:
        try:
            hour, minute, second = (int(part) for part in parts[3].split(":"))
            zone = _zone_of(parts[4]) if len(parts) == 5 else get_zone(tz)
            moment = datetime(int(parts[2]), MONTHS[parts[0]], int(parts[1]), hour, minute, second, tzinfo=zone)
        except ValueError as exc:
            raise ValueError(f"Event-Timestamp: not a time: {text!r} ({exc})") from None
        return moment.astimezone(UTC)
    try:
        return parse_timestamp(text, default_tz=tz)
    except ValueError as exc:
        raise ValueError(f"Event-Timestamp: {exc}") from None


def _seconds(attributes: dict[str, str], name: str) -> int | None:
    text = attributes.get(name)
    if text is None or text == "":
        return None
    if not text.isdecimal():
        raise ValueError(f"{name}: {text!r} is not a number of seconds")
    return int(text)


def _record_time(block: _Block, tz: str) -> datetime:
    """When the event happened: Event-Timestamp (the NAS's clock), else the server's `Timestamp`
    or date line less `Acct-Delay-Time` (how long the NAS kept retrying before it was logged)."""
    attributes = block.attributes
    event = attributes.get("Event-Timestamp")
    if event:
        return _event_timestamp(event, tz)
    delay = timedelta(seconds=_seconds(attributes, "Acct-Delay-Time") or 0)
    unix = _seconds(attributes, "Timestamp")
    if unix is not None:
        return datetime.fromtimestamp(unix, tz=UTC) - delay
    if block.logged_at is None:  # not reached: a block without a usable date line is rejected first
        raise ValueError("no time: no Event-Timestamp, Timestamp or date line")
    return block.logged_at - delay


def _session_ref(attributes: dict[str, str], username: str) -> str:
    """Acct-Unique-Session-Id, else Acct-Session-Id|NAS-IP-Address|User-Name (a NAS reuses its
    session ids after a reboot, and two NASes may use the same one); hashed beyond 64 characters."""
    key = attributes.get("Acct-Unique-Session-Id")
    if not key:
        session_id = attributes.get("Acct-Session-Id")
        if not session_id:
            raise ValueError("no Acct-Unique-Session-Id or Acct-Session-Id")
        key = "|".join((session_id, attributes.get("NAS-IP-Address", ""), username))
    if len(key) <= MAX_SESSION_REF_CHARS:
        return key
    return HASHED_REF_MARK + hashlib.sha256(key.encode("utf-8")).hexdigest()[:MAX_SESSION_REF_CHARS - 1]


def _addresses(attributes: dict[str, str]) -> list[str]:
    """The addresses and prefixes a record names, normalised; ValueError naming the attribute."""
    found: list[str] = []
    for name, normalise in ADDRESS_ATTRIBUTES:
        text = attributes.get(name)
        if not text:
            continue
        try:
            address = normalise(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if address not in UNSPECIFIED_ADDRESSES and address not in found:
            found.append(address)
    return found


# --- following sessions --------------------------------------------------------------------------

@dataclass
class _Session:
    """A session open in this file: since when, last seen alive, and each address with when it
    first appeared (a delegated prefix often arrives in an Interim-Update after the Start)."""

    ref: str
    username: str
    nas: str | None
    line: int
    started_at: datetime
    last_alive: datetime
    addresses: dict[str, datetime]


@dataclass(frozen=True)
class _Record:
    """What one accounting record says, read and checked."""

    status: str
    at: datetime
    ref: str
    username: str
    nas: str | None
    addresses: list[str]
    session_time: int | None

    @property
    def derived_start(self) -> datetime:
        """When the session began if its Start is not in this file: now less Acct-Session-Time."""
        return self.at - timedelta(seconds=self.session_time or 0)


class _Sessions:
    """The state of a detail file read so far: open sessions and which one holds each address."""

    def __init__(self, max_age: timedelta) -> None:
        self.max_age = max_age
        self.open: dict[str, _Session] = {}
        self.holders: dict[str, str] = {}  # address → ref of the open session using it

    def handle(self, block: _Block, record: _Record) -> Iterator[SessionRecord | Rejection]:
        if record.status == START:
            yield from self._start(block, record)
        elif record.status == INTERIM:
            yield from self._interim(block, record)
        else:
            yield from self._stop(block, record)

    def _start(self, block: _Block, record: _Record) -> Iterator[SessionRecord | Rejection]:
        if record.ref in self.open:  # a Start sent again (lost answer): it only says "alive"
            self._touch(self.open[record.ref], record)
            return
        if not record.addresses:
            yield block.rejection(f"{START} without an address ({', '.join(n for n, _ in ADDRESS_ATTRIBUTES)})")
            return
        yield from self._open(block, record, record.at)

    def _interim(self, block: _Block, record: _Record) -> Iterator[SessionRecord | Rejection]:
        session = self.open.get(record.ref)
        if session is not None:
            yield from self._close_holders(record.addresses, record.at, keep=record.ref)
            self._touch(session, record)
            return
        if not record.addresses:
            yield block.rejection(_unknown_without_address(INTERIM))
            return
        yield from self._open(block, record, record.derived_start)

    def _stop(self, block: _Block, record: _Record) -> Iterator[SessionRecord | Rejection]:
        session = self.open.get(record.ref)
        if session is None:
            if not record.addresses:
                yield block.rejection(_unknown_without_address(STOP))
                return
            session = _new_session(block, record, record.derived_start)
        elif record.at < session.started_at:
            yield block.rejection(f"{STOP} at {record.at.isoformat()} is before its session started "
                                  f"({session.started_at.isoformat()})")
            return
        else:
            self._touch(session, record)
        self._forget(session)
        yield from _session_records(session, ended_at=record.at)

    def _open(self, block: _Block, record: _Record, started_at: datetime) -> Iterator[SessionRecord]:
        yield from self._close_holders(record.addresses, started_at, keep=record.ref)
        session = _new_session(block, record, started_at)
        self.open[record.ref] = session
        for address in record.addresses:
            self.holders[address] = record.ref

    def _touch(self, session: _Session, record: _Record) -> None:
        session.last_alive = max(session.last_alive, record.at)
        for address in record.addresses:
            if address not in session.addresses:
                session.addresses[address] = max(record.at, session.started_at)
                self.holders[address] = session.ref

    def _close_holders(self, addresses: list[str], at: datetime, *, keep: str) -> Iterator[SessionRecord]:
        """A session that starts on an address ends every other open session that had it before."""
        for address in addresses:
            ref = self.holders.get(address)
            if ref is None or ref == keep:
                continue
            holder = self.open[ref]
            if holder.started_at > at:  # that one started later: it is the newer holder
                continue
            self._forget(holder)
            yield from self._ended_or_expired(holder, at)

    def _ended_or_expired(self, session: _Session, at: datetime) -> Iterator[SessionRecord]:
        """Close a session at `at`, unless it went silent for longer than the maximum age before:
        then it ended some time we do not know, bounded by open_until, as at the end of a file."""
        expiry = session.last_alive + self.max_age
        if expiry < at:
            yield from _session_records(session, open_until=expiry)
        else:
            yield from _session_records(session, ended_at=at)

    def _forget(self, session: _Session) -> None:
        self.open.pop(session.ref, None)
        for address in session.addresses:
            if self.holders.get(address) == session.ref:
                del self.holders[address]

    def nas_restarted(self, nas: str | None, at: datetime) -> Iterator[SessionRecord]:
        """Accounting-On/Off: the NAS (re)booted, so every session it had open is over."""
        if not nas:
            return
        for session in [s for s in self.open.values() if s.nas == nas and s.started_at <= at]:
            self._forget(session)
            yield from self._ended_or_expired(session, at)

    def sweep(self, now: datetime) -> Iterator[SessionRecord]:
        """Yield and forget the sessions silent for longer than the maximum age before `now`."""
        for session in [s for s in self.open.values() if s.last_alive + self.max_age < now]:
            self._forget(session)
            yield from _session_records(session, open_until=session.last_alive + self.max_age)

    def finish(self) -> Iterator[SessionRecord]:
        """At the end of the file, every session still open is yielded open, bounded by open_until."""
        for session in list(self.open.values()):
            yield from _session_records(session, open_until=session.last_alive + self.max_age)
        self.open.clear()
        self.holders.clear()


def _new_session(block: _Block, record: _Record, started_at: datetime) -> _Session:
    """The session a record opens (or, a Stop of one begun in an earlier file, closes at once)."""
    return _Session(record.ref, record.username, record.nas, block.line, started_at, record.at,
                    dict.fromkeys(record.addresses, started_at))


def _unknown_without_address(status: str) -> str:
    """Why a record of a session this file never saw start cannot be used: it names no address."""
    return f"{status} of a session not started in this file, without an address"


def _nas(attributes: dict[str, str]) -> str | None:
    """The NAS a record comes from: sessions and reboots are per NAS."""
    return attributes.get("NAS-IP-Address") or attributes.get("NAS-Identifier")


def _session_records(session: _Session, *, ended_at: datetime | None = None,
                     open_until: datetime | None = None) -> Iterator[SessionRecord]:
    """A record per address of the session. An address that appeared after the time the session
    ended (an Interim-Update logged on time, then a Stop logged late: Acct-Delay-Time) ends where it
    began, never before: the store relies on an interval covering at least its own start."""
    for address, since in session.addresses.items():
        yield SessionRecord(line=session.line, account_ref=None, ip=address, started_at=since,
                            ended_at=ended_at if ended_at is None or ended_at >= since else since,
                            username=session.username, session_ref=session.ref, open_until=open_until)


def _read_record(block: _Block, status: str, tz: str) -> _Record:
    """Check a Start/Interim-Update/Stop block; ValueError with the reason it cannot be used."""
    attributes = block.attributes
    username = attributes.get("User-Name", "").strip()
    if not username:
        raise ValueError(f"{status} without User-Name")
    try:
        username = _check_username(username)
    except ValueError as exc:
        raise ValueError(f"User-Name: {exc}") from None
    return _Record(status=status, at=_record_time(block, tz), ref=_session_ref(attributes, username),
                   username=username, nas=_nas(attributes),
                   addresses=_addresses(attributes), session_time=_seconds(attributes, "Acct-Session-Time"))


def parse_radius_detail(
    path: Path | str, *, tz: str = LOCAL_TIMEZONE, max_session_hours: float = 24.0
) -> Iterator[SessionRecord | Rejection]:
    """Yield a SessionRecord per (session, address) of a FreeRADIUS detail file, a Rejection per bad record.

    A session ends at its Stop; at a later Start (or Interim-Update of a session begun in an earlier
    file) on one of its addresses, at that session's start; at an Accounting-On/Off of its NAS. One
    still open at the end of the file has `ended_at` None and `open_until` = the last record that
    showed it alive + `max_session_hours`; so has one silent for longer than that when something
    would have closed it. A session whose Start is in an earlier file starts at the record's time less
    Acct-Session-Time. Records are timed by Event-Timestamp, else `Timestamp`, else the date line
    (both less Acct-Delay-Time); the date line and times without a zone are in `tz`. Accounting-On/Off
    records are the NAS's housekeeping, never rejected; other status types are.
    """
    path = Path(path)
    check_zone(path, tz)
    zone = get_zone(tz)
    sessions = _Sessions(timedelta(hours=max_session_hours))
    for count, block in enumerate(_blocks(path, zone), start=1):
        yield from _handle_block(sessions, block, tz)
        if count % SWEEP_EVERY_RECORDS == 0 and block.logged_at is not None:
            yield from sessions.sweep(block.logged_at)
    yield from sessions.finish()


def _handle_block(sessions: _Sessions, block: _Block, tz: str) -> Iterator[SessionRecord | Rejection]:
    if block.problem is not None:
        yield block.rejection(block.problem)
        return
    status = block.attributes.get("Acct-Status-Type")
    if not status:
        yield block.rejection("no Acct-Status-Type")
        return
    try:
        if status in NAS_RESTARTS:
            yield from sessions.nas_restarted(_nas(block.attributes), _record_time(block, tz))
            return
        if status not in STATUS_ALIASES:
            yield block.rejection(f"unsupported Acct-Status-Type {status[:40]!r}")
            return
        record = _read_record(block, STATUS_ALIASES[status], tz)
    except ValueError as exc:
        yield block.rejection(str(exc))
        return
    yield from sessions.handle(block, record)
