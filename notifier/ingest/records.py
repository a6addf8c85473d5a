"""What parsers yield: one typed, already normalised record per input row, or a rejection.

The records are plain frozen dataclasses, not database models, so parsing stays a pure stage that
can be tested without a database, and the importer decides how records become rows. Every record
keeps its source line so an operator can trace a stored item or a complaint back to the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from notifier.errors import InputError

MAX_RAW_CHARS = 2000  # keep enough of a line to recognise it, never a whole runaway row
DATE_PRECISION = "date"  # `seen_precision` of an event whose feed gave a day without a time


def bound_raw(text: str) -> str:
    """Cut raw line text to MAX_RAW_CHARS so one broken row cannot flood storage or logs."""
    return text[:MAX_RAW_CHARS]


@dataclass(frozen=True)
class Rejection:
    """A row that could not be used: its physical line number (header = 1), why, and its text."""

    line: int
    reason: str
    raw: str


@dataclass(frozen=True)
class SubscriberRecord:
    """One account from the operator's customer export, identifiers normalised (E.164, lower case)."""

    line: int
    account_ref: str
    full_name: str
    msisdns: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    service: str | None = None
    billing_day: int | None = None
    language: str = "vi"
    status: str = "active"
    sms_opt_out: bool = False
    email_opt_out: bool = False
    voice_opt_out: bool = False
    address: str | None = None
    province: str | None = None
    usernames: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # kept anyway, but the operator should look (no raw numbers)


@dataclass(frozen=True)
class SessionRecord:
    """One IP assignment interval: which account held `ip` from `started_at` until `ended_at`.

    `ip` is one address ("14.160.1.2") or a network ("2402:800:6310:5600::/56", static prefixes,
    delegated IPv6 prefixes). The account is `account_ref`, or, for RADIUS, the account that lists
    `username` (then `account_ref` is None). `ended_at` is None while the session is still open;
    `open_until` then bounds it when the source says how long an open session may last.
    `session_ref` is the source's own session id, so a Stop in a later file closes this row.
    """

    line: int
    account_ref: str | None
    ip: str
    started_at: datetime
    ended_at: datetime | None = None
    username: str | None = None
    session_ref: str | None = None
    open_until: datetime | None = None


@dataclass(frozen=True)
class NatEventRecord:
    """One line of a carrier-grade NAT log: a port block of `public_ip` allocated to, or released
    from, `private_ip` at `at` (`event` is "alloc" or "release")."""

    line: int
    event: str
    at: datetime
    private_ip: str
    public_ip: str
    port_start: int
    port_end: int


@dataclass(frozen=True)
class FeedEventRecord:
    """One sighting in a security feed or leak list, keyed by one normalised identifier.

    identifier_kind is one of "ip", "msisdn", "email", "msisdn_sha256", "email_sha256";
    kind is "infected_device" or "data_leak". `raw` is the source line text (bounded).
    `seen_precision` is DATE_PRECISION when the feed gave only a day (`seen_at` is then its start),
    None for a full time. Records of one line share `line`: together they are one sighting.
    """

    line: int
    identifier_kind: str
    identifier: str
    port: int | None
    seen_at: datetime | None
    threat: str | None
    category: str | None
    kind: str
    data_classes: tuple[str, ...]
    source: str | None
    raw: str
    seen_precision: str | None = None


ParseResult = SubscriberRecord | SessionRecord | NatEventRecord | FeedEventRecord | Rejection
Parser = Callable[..., Iterator[ParseResult]]


def find_parser(registry: Mapping[str, Parser], name: str) -> Parser:
    """Look a format name up in a parser registry; an unknown name is an InputError listing the known."""
    parser = registry.get(name)
    if parser is None:
        raise InputError(f"unknown format {name!r} (known: {', '.join(sorted(registry))})")
    return parser
