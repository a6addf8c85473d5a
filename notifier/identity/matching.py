"""Identity resolution: which account does each feed item point at?

Phones and e-mails match the account's contact points (clear or SHA-256). An IP address matches
the account that held it when the event was seen, under these rules (identity_common, issue 7):

- An assignment interval [started_at, covers_until) is widened by the clock skew
  (`identity.clock_skew_seconds`) at both ends: the feed's sensor, the BRAS and the NAT box do not
  share a clock, so an event seconds after a session's recorded end still finds it, and an event
  seconds from a hand-over finds both holders.
- Distinct accounts whose widened intervals hold the time: one → matched, two or more → ambiguous
  (never notified, never guessed), none → unmatched. Every prefix length in use is looked up, so a
  static /29 or a delegated IPv6 /56 holds every address inside it.
- CGNAT comes first: when the address is the public side of a `nat_block` around that time, the
  operator logged it as a pool address, and whatever `ip_assignment` says about it (a pool range
  listed as "static" to an infrastructure account, say) would name the wrong subscriber. With a
  source port, the block holding that port gives the private address; without one, the public
  address resolves only if a single private address held blocks of it then. The private address
  is then matched through `ip_assignment` at the same time, under the same rules.

Matching is set-based, per batch of pending items (read through the driver's cursor): the batch's
probes (sighting ranked by address, network start per prefix length, time window) go into a
TEMPORARY table in address order, and one `UPDATE feed_item … FROM (SELECT … GROUP BY)` decides
and writes every address's outcome in the database: a LEFT JOIN from the probes into the
`ix_ip_assignment_cover` index (each page read once per batch), `min`/`max` of the holders' account
telling matched from ambiguous, the reason text built in SQL. Only contacts, CGNAT decisions and
items without an identifier or a time go through Python and a small outcome table. The same
statements run on SQLite and PostgreSQL, so an item's outcome never depends on the backend.

A feed imported from a file never goes through that UPDATE: `ItemResolver` reads the same outcome
statement for each batch before the batch is stored, and every item is inserted once with its
outcome (the update rewrote each row and, on PostgreSQL, added a new entry to each index).
`match_feed` remains how pending items are matched, with the same outcomes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from operator import itemgetter
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.bulk_copy import binary_type, copy_rows
from notifier.db import empty_scratch_tables, sqlite_page_cache, sqlite_time
from notifier.errors import MatchError
from notifier.identifiers import key_ip, key_network_start, stored_ip_key
from notifier.models import (
    NETWORK_ROWS,
    SINGLE_ADDRESS,
    ContactPoint,
    FeedItem,
    IpAssignment,
    NatBlock,
    UtcDateTime,
)
from notifier.settings import get_settings

# Items per round trip: large enough that per-statement costs vanish, small enough that a batch's
# probes and fetched rows stay a few megabytes whatever the feed's size.
MATCH_BATCH = 50_000
# SQLite page cache of the matching connection while it matches (KiB, negative = size, not pages):
# the default 2 MB holds none of a 10-million-interval index, so every probe re-read its pages
# from the OS. Restored afterwards, so the pooled connection keeps its usual footprint.
SQLITE_MATCH_CACHE_KIB = 262_144
KEY_CACHE_LIMIT = 200_000  # addresses whose key is remembered within one call (~30 MB at most)

Outcome = tuple[str, int | None, str | None]  # (status, account id, reason)

_NO_IP_HOLDER = "no account held this IP address at that time"
_NO_TIME = "an IP address without a time cannot be matched"

_CONTACT_COLUMNS = {
    "msisdn": ("msisdn", ContactPoint.value),
    "email": ("email", ContactPoint.value),
    "msisdn_sha256": ("msisdn", ContactPoint.value_sha256),
    "email_sha256": ("email", ContactPoint.value_sha256),
}

# Per-connection scratch tables. TEMPORARY: invisible to other sessions, gone with the connection,
# and never in the migrated schema.
_SCRATCH = sa.MetaData()
_PROBE = sa.Table(
    "match_probe", _SCRATCH,
    sa.Column("seq", sa.Integer, nullable=False),  # the sighting's rank in address order
    # Defaults: the usual probe (a single address, no CGNAT) is loaded without these two columns.
    sa.Column("prefix_len", sa.Integer, nullable=False, server_default=sa.text(str(SINGLE_ADDRESS))),
    sa.Column("ref", sa.Integer, nullable=False),
    sa.Column("net_start", sa.String(32), nullable=False),
    sa.Column("seen_lo", UtcDateTime(), nullable=False),  # seen_at − skew
    sa.Column("seen_hi", UtcDateTime(), nullable=False),  # seen_at + skew
    # the private address a CGNAT block led to
    sa.Column("via", sa.String(64), nullable=True, server_default=sa.null()),
    # Stored in address order (SQLite: WITHOUT ROWID on this key): the join then walks the lookup
    # index in its own order, so each index page is read once per batch, not once per sighting
    # (at 10 million intervals the index is four times the page cache: 5.6 → 2.9 µs per probe),
    # and the outcome statement groups the sightings as it scans, without a sort.
    sa.PrimaryKeyConstraint("seq", "prefix_len"),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,
)
_USUAL_PROBE_COLUMNS = ("seq", "ref", "net_start", "seen_lo", "seen_hi")
_NAT_PROBE = sa.Table(
    "match_nat_probe", _SCRATCH,
    sa.Column("ref", sa.Integer, nullable=False),
    sa.Column("public_key", sa.String(32), nullable=False),
    sa.Column("port", sa.Integer, nullable=True),
    sa.Column("seen_lo", UtcDateTime(), nullable=False),
    sa.Column("seen_hi", UtcDateTime(), nullable=False),
    prefixes=["TEMPORARY"],
)
_OUTCOME = sa.Table(
    "match_outcome", _SCRATCH,
    sa.Column("item_id", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("account_id", sa.Integer, nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    prefixes=["TEMPORARY"],
)


@dataclass
class MatchCounts:
    matched: int = 0
    unmatched: int = 0
    ambiguous: int = 0


@dataclass(frozen=True)
class Sighting:
    """An address seen at a time (and from a source port, which CGNAT resolution needs).

    `ref` identifies the sighting in the results (a feed item's id, or a position)."""

    ref: int
    ip: str  # normalised (`identifiers.normalise_ip`)
    seen_at: datetime
    port: int | None = None


class _TextClock:
    """seen_at ± skew on SQLite's stored text (`YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC).

    Parsing one datetime and formatting two per event costs about 1 µs, a fifth of the budget.
    A skew of whole minutes (the default is 60 s) moves only the `YYYY-MM-DD HH:MM` prefix: that
    shift is computed once per distinct minute and remembered, and the rest of the text is kept.
    Any other skew or text form (no fraction, an offset) takes the datetime path: exact either way.
    """

    def __init__(self, skew: timedelta) -> None:
        self.skew = skew
        self.by_minute = skew % timedelta(minutes=1) == timedelta(0)
        self._shifted: dict[str, tuple[str, str]] = {}

    def bounds(self, text: str) -> tuple[str, str]:
        if self.by_minute and len(text) == 26 and text[19] == ".":
            shifted = self._shifted.get(text[:16])
            if shifted is None:
                shifted = self._shift(text)
            if shifted is not None:
                rest = text[16:]
                return shifted[0] + rest, shifted[1] + rest
        return self._exact(text)

    def _shift(self, text: str) -> tuple[str, str] | None:
        """(minute − skew, minute + skew) prefixes for canonical text, else None (no shortcut)."""
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is not None or moment.isoformat(" ", "microseconds") != text:
            return None
        minute = moment.replace(second=0, microsecond=0)
        shifted = self._shifted[text[:16]] = ((minute - self.skew).isoformat(" ", "minutes"),
                                              (minute + self.skew).isoformat(" ", "minutes"))
        return shifted

    def _exact(self, text: str) -> tuple[str, str]:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        low, high = moment - self.skew, moment + self.skew
        return low.isoformat(" ", "microseconds"), high.isoformat(" ", "microseconds")


class _Transport:
    """How a batch's rows travel between Python and the scratch tables, by each driver's fastest path.

    The statements that decide outcomes are the same on both backends; only the bulk movement of
    rows differs, because per-row parameter processing would cost more than the matching itself:
    pending items are read through the driver's own cursor, probe rows go in by one `executemany`
    of plain tuples on SQLite and one binary `COPY` on PostgreSQL. A time inside a batch stays in the
    backend's raw form (SQLite's stored text, PostgreSQL's aware datetime), so none is converted
    twice, and the time bounds of a probe are computed in that form.
    """

    def __init__(self, session: Session, skew: timedelta) -> None:
        self.session = session
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.driver = self.connection.connection.driver_connection
        self.skew = skew
        # (seen − skew, seen + skew) of a raw time, ready to load: called once per sighting, so it
        # is the clock's own method, not a wrapper around it.
        self.bounds: Callable[[Any], tuple[Any, Any]] = self._aware_bounds if self.postgres else _TextClock(skew).bounds
        self._keys: dict[str, str] = {}
        self.cached_key = self._keys.get  # `cached_key(ip) or key(ip)`: no call when remembered
        self._sql: dict[str, str] = {}

    def fetch(self, sql: str, parameters: tuple[object, ...]) -> list[tuple]:  # type: ignore[type-arg]
        """Rows of a driver-level query (`?` marks), as the driver returns them."""
        cursor = self.driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql.replace("?", "%s") if self.postgres else sql, parameters)
            return cursor.fetchall()  # type: ignore[no-any-return]
        finally:
            cursor.close()

    def execute(self, statement: sa.Executable) -> sa.CursorResult:  # type: ignore[type-arg]
        return self.connection.execute(statement)

    def compiled(self, name: str, build: Callable[[], sa.ClauseElement]) -> str:
        """The SQL text of the statement `build` makes, whose only parameters are constants (rendered
        inline), for `fetch`: compiled once per transport, not once per batch."""
        sql = self._sql.get(name)
        if sql is None:
            statement = build()
            sql = self._sql[name] = str(statement.compile(dialect=self.connection.dialect,
                                                          compile_kwargs={"literal_binds": True}))
        return sql

    def own_time(self, moment: datetime) -> object:
        """An aware datetime from a caller → the backend's raw form."""
        return moment.astimezone(UTC) if self.postgres else sqlite_time(moment)

    def _aware_bounds(self, seen: datetime) -> tuple[datetime, datetime]:
        return seen - self.skew, seen + self.skew

    def key(self, ip: str) -> str:
        """`stored_ip_key`, remembered: a feed names the same infected address many times."""
        key = self._keys.get(ip)
        if key is None:
            if len(self._keys) >= KEY_CACHE_LIMIT:
                self._keys.clear()
            key = self._keys[ip] = stored_ip_key(ip)
        return key

    def load(self, table: sa.Table, rows: Iterable[tuple[object, ...]], columns: Sequence[str] | None = None) -> None:
        """Rows (in the backend's raw form) into `table`'s `columns` (default: all of them, in order)."""
        columns = [column.name for column in table.columns] if columns is None else columns
        names = ", ".join(columns)
        if self.postgres:
            copy_rows(self.driver, table.name, columns, [binary_type(table.c[name].type) for name in columns], rows)
        else:
            marks = ", ".join("?" for _ in columns)
            self.driver.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)  # type: ignore[union-attr]

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """The scratch tables (and, on SQLite, a page cache that holds the lookup index) for the
        duration of the work; the pooled connection is left as it was."""
        with ExitStack() as restore:
            if self.postgres:
                # The outcome statement's cost estimate crosses `jit_above_cost`: compiling it took
                # ~18 ms per batch and saved nothing (index probes, not expression evaluation).
                previous = self.fetch("SELECT current_setting('jit'), set_config('jit', 'off', true)", ())[0][0]
                restore.callback(self.fetch, "SELECT set_config('jit', ?, true)", (previous,))
            else:
                restore.enter_context(sqlite_page_cache(self.driver, SQLITE_MATCH_CACHE_KIB))
            for table in _SCRATCH.sorted_tables:
                self.session.execute(sa.schema.CreateTable(table, if_not_exists=True))
            try:
                yield
            finally:
                for table in _SCRATCH.sorted_tables:
                    self.session.execute(sa.schema.DropTable(table, if_exists=True))

    def clear(self) -> None:
        """Empty the scratch tables for the next batch (`db.empty_scratch_tables`)."""
        empty_scratch_tables(self.connection, *(table.name for table in _SCRATCH.sorted_tables))


def clock_skew(skew_seconds: float | None = None) -> timedelta:
    """The tolerance that widens every interval: explicit (tests, the benchmark) or configured."""
    seconds = get_settings().identity.clock_skew_seconds if skew_seconds is None else skew_seconds
    return timedelta(seconds=seconds)


# --- contacts ---------------------------------------------------------------------------------


def accounts_for_contact(session: Session, identifier_kind: str, identifier: str) -> list[int]:
    """Accounts that list this phone / e-mail (or its hash) as a contact point."""
    if identifier_kind not in _CONTACT_COLUMNS:
        raise MatchError(f"cannot match identifier kind '{identifier_kind}'")
    return sorted(_contact_accounts(session, [(identifier_kind, identifier)]).get((identifier_kind, identifier), ()))


def _contact_accounts(session: Session, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
    """(identifier kind, identifier) → accounts listing it: one query per kind for a whole batch."""
    values: dict[str, set[str]] = defaultdict(set)
    for identifier_kind, identifier in wanted:
        values[identifier_kind].add(identifier)
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for identifier_kind, identifiers in values.items():
        kind, column = _CONTACT_COLUMNS[identifier_kind]
        for account_id, value in session.execute(
            sa.select(ContactPoint.account_id, column).where(ContactPoint.kind == kind, column.in_(identifiers))
        ):
            found[(identifier_kind, value)].add(account_id)
    return found


def _no_contact_reason(identifier_kind: str) -> str:
    return f"no account has this {identifier_kind.replace('_', ' ')}"


# --- addresses --------------------------------------------------------------------------------


def prefix_lengths(session: Session) -> list[int]:
    """The prefix lengths to probe, longest first: single addresses (128) always, and each shorter
    one an assignment uses, read from `ix_ip_assignment_prefix`, which holds only network rows (a
    DISTINCT over every row read the whole cover index once per feed). Few, so each is one probe;
    probing 128 when no single address is stored finds nothing and changes no outcome."""
    networks = session.exec(select(IpAssignment.prefix_len).where(NETWORK_ROWS).distinct()).all()
    return sorted({SINGLE_ADDRESS, *networks}, reverse=True)


def nat_in_use(session: Session) -> bool:
    """Whether any CGNAT block is stored: without one, the NAT probe is skipped entirely."""
    return session.execute(sa.select(NatBlock.id).limit(1)).first() is not None


def accounts_for_ip(session: Session, ip: str, seen_at: datetime, *, lengths: list[int] | None = None,
                    skew_seconds: float | None = None) -> list[int]:
    """Accounts whose assignment, widened by the clock skew, covered `ip` at `seen_at` (interval
    closed at its widened start, open at its widened end). CGNAT blocks are not consulted: use
    `resolve_ips` for the full rules."""
    return accounts_for_ips(session, [(ip, seen_at)], lengths=lengths, skew_seconds=skew_seconds)[0]


def accounts_for_ips(session: Session, sightings: Sequence[tuple[str, datetime]], *,
                     lengths: list[int] | None = None, skew_seconds: float | None = None) -> list[list[int]]:
    """`accounts_for_ip` for many sightings, through the same probe table and join as `match_feed`."""
    lengths = prefix_lengths(session) if lengths is None else lengths
    transport = _Transport(session, clock_skew(skew_seconds))
    with transport.scratch():
        _load_probes(transport, [(ref, transport.key(ip), transport.own_time(seen_at), None)
                                 for ref, (ip, seen_at) in enumerate(sightings)], lengths)
        found: list[set[int]] = [set() for _ in sightings]
        for ref, account_id in transport.execute(_holder_pairs()):
            found[ref].add(account_id)
        return [sorted(accounts) for accounts in found]


def resolve_ips(session: Session, sightings: Sequence[Sighting], *, lengths: list[int] | None = None,
                skew_seconds: float | None = None, nat: bool | None = None) -> dict[int, Outcome]:
    """Outcome (status, account, reason) of every sighting under all the rules, CGNAT included.

    The outcomes come from the same statement `match_feed` writes into the feed's items."""
    lengths = prefix_lengths(session) if lengths is None else lengths
    nat = nat_in_use(session) if nat is None else nat
    transport = _Transport(session, clock_skew(skew_seconds))
    with transport.scratch():
        rows = [(s.ref, s.ip, transport.own_time(s.seen_at), s.port) for s in sightings]
        outcomes = _probe_addresses(transport, rows, lengths, nat)
        outcomes.update(_decided_addresses(transport))
        return outcomes


def _decided_addresses(transport: _Transport) -> dict[int, Outcome]:
    """ref → outcome of every probed sighting, read from the outcome statement (not written)
    through the driver's cursor: a result row through SQLAlchemy cost about a microsecond."""
    rows = transport.fetch(transport.compiled("address outcomes", _address_outcomes), ())
    return {ref: (status, account_id, reason) for ref, status, account_id, reason in rows}


# (ref, normalised ip, seen_at in the backend's raw form, source port): a tuple, not an object,
# because a feed makes a million of them.
_SightingRow = tuple[int, str, object, int | None]
# (ref, key to look up, seen_at raw, private address text for a CGNAT-resolved sighting or None)
_TargetRow = tuple[int, str, object, str | None]


def _probe_addresses(transport: _Transport, sightings: Sequence[_SightingRow], lengths: list[int],
                     nat: bool) -> dict[int, Outcome]:
    """Load the probe table for every sighting still to look up in `ip_assignment`; returns the
    outcomes CGNAT decided on its own (no block held the port, a shared address without a port)."""
    cached, key = transport.cached_key, transport.key
    targets: list[_TargetRow] = [(ref, cached(ip) or key(ip), seen, None) for ref, ip, seen, _ in sightings]
    decided: dict[int, Outcome] = {}
    if nat:
        targets, decided = _through_nat(transport, sightings, targets)
    _load_probes(transport, targets, lengths or [SINGLE_ADDRESS])
    return decided


def _through_nat(transport: _Transport, sightings: Sequence[_SightingRow],
                 targets: list[_TargetRow]) -> tuple[list[_TargetRow], dict[int, Outcome]]:
    """CGNAT first: a public address of a block around that time is decided here or replaced by
    the private address behind it (looked up next, at the same time)."""
    hits = _nat_holders(transport, sightings, targets)
    decided: dict[int, Outcome] = {}
    remaining: list[_TargetRow] = []
    for (ref, key, seen, _), (_, _, _, port) in zip(targets, sightings):
        if ref not in hits:
            remaining.append((ref, key, seen, None))
            continue
        outcome, private_key = _nat_outcome(port, *hits[ref])
        if outcome is not None:
            decided[ref] = outcome
        elif private_key is not None:
            remaining.append((ref, private_key, seen, key_ip(private_key)))
    return remaining, decided


def _nat_outcome(port: int | None, holders: int, private_key: str | None) -> tuple[Outcome | None, str | None]:
    """A public CGNAT address: (the outcome decided here, None) or (None, the private key to look up)."""
    if port is None:
        if holders > 1:
            return ("ambiguous", None, f"public address shared by {holders} subscribers and the feed gave no port"), None
    elif holders == 0:
        return ("unmatched", None, f"no CGNAT port block of this public address held port {port} at that time"), None
    elif holders > 1:
        return ("ambiguous", None,
                f"{holders} private addresses held CGNAT port {port} of this address around that time; "
                "not guessed"), None
    return None, private_key  # exactly one private address held it


def _nat_holders(transport: _Transport, sightings: Sequence[_SightingRow],
                 targets: list[_TargetRow]) -> dict[int, tuple[int, str | None]]:
    """ref → (distinct private addresses that fit, lowest of them) for every sighting whose address
    is the public side of a NAT block around that time; the others are absent."""
    bounds = transport.bounds
    transport.load(_NAT_PROBE, [(ref, key, port, *bounds(seen))
                                for (ref, key, seen, _), (_, _, _, port) in zip(targets, sightings)])
    probe, block = _NAT_PROBE, NatBlock.__table__
    fits = sa.or_(probe.c.port.is_(None), sa.and_(block.c.port_start <= probe.c.port, probe.c.port <= block.c.port_end))
    holder = sa.case((fits, block.c.private_key))
    query = (sa.select(probe.c.ref, sa.func.count(sa.distinct(holder)), sa.func.min(holder))
             .select_from(probe.join(block, sa.and_(block.c.public_key == probe.c.public_key,
                                                    block.c.covers_until > probe.c.seen_lo,
                                                    block.c.allocated_at <= probe.c.seen_hi)))
             .group_by(probe.c.ref))
    return {ref: (count, first) for ref, count, first in transport.execute(query)}


def _load_probes(transport: _Transport, targets: Iterable[_TargetRow], lengths: list[int]) -> None:
    """One probe row per (sighting, prefix length in use): the network that would hold the address,
    the sightings ranked by address (see `_PROBE`). Rows are generated as they are loaded."""
    bounds = transport.bounds
    ranked = sorted(targets, key=itemgetter(1))
    if lengths == [SINGLE_ADDRESS] and not any(target[3] for target in ranked):
        # The usual case (no static prefixes, no CGNAT): no arithmetic on keys, and the two
        # columns every probe would repeat are left to their defaults.
        transport.load(_PROBE, ((seq, ref, key, *bounds(seen)) for seq, (ref, key, seen, _) in enumerate(ranked)),
                       _USUAL_PROBE_COLUMNS)
        return
    if lengths == [SINGLE_ADDRESS]:
        rows: Iterable[tuple[object, ...]] = ((seq, SINGLE_ADDRESS, ref, key, *bounds(seen), via)
                                              for seq, (ref, key, seen, via) in enumerate(ranked))
    else:
        rows = ((seq, length, ref, key if length == SINGLE_ADDRESS else key_network_start(key, length),
                 *bounds(seen), via) for seq, (ref, key, seen, via) in enumerate(ranked) for length in lengths)
    transport.load(_PROBE, rows)


def _holder_pairs() -> sa.Select:  # type: ignore[type-arg]
    """(ref, account) for every assignment whose widened interval holds a probe's time."""
    assignment = IpAssignment.__table__
    return sa.select(_PROBE.c.ref, assignment.c.account_id).select_from(
        _PROBE.join(assignment, _holds(_PROBE, assignment))).distinct()


def _holds(probe: sa.FromClause, assignment: sa.FromClause) -> sa.ColumnElement[bool]:
    """An assignment whose widened interval holds the probe's time, on the probe's network.

    [started_at − skew, covers_until + skew) holds t  ⇔  covers_until > t − skew AND
    started_at <= t + skew: the first half is the range of the index (range_start, covers_until).
    `prefix_len` keeps a probe for a /120 from finding a single address that starts that network.
    """
    return sa.and_(assignment.c.range_start == probe.c.net_start, assignment.c.covers_until > probe.c.seen_lo,
                   assignment.c.started_at <= probe.c.seen_hi, assignment.c.prefix_len == probe.c.prefix_len)


def _text(value: str) -> sa.ColumnElement[str]:
    """A constant of the outcome statement, inline: the statement is the same text every batch."""
    assert "'" not in value
    return sa.literal_column(f"'{value}'", sa.String())


def _address_outcomes() -> sa.Select:  # type: ignore[type-arg]
    """(ref, status, account, reason) of every probed sighting, decided in the database.

    The probe table is the outer side of a LEFT JOIN: both planners then walk the batch and probe
    `ix_ip_assignment_cover` once per row, whatever statistics they have (an ANALYZEd SQLite
    database otherwise scanned the whole index for every batch), and a sighting nobody held still
    yields its row. `min` and `max` of the account tell one holder from several. The number of
    distinct holders only goes into an ambiguous sighting's reason: two matching intervals with
    different accounts are two holders, and only with more rows is it counted, by a subquery on
    that sighting alone (`count(DISTINCT)` over every row cost a sort, a fifth of the statement).
    """
    probe, assignment = _PROBE, IpAssignment.__table__
    account = assignment.c.account_id
    lowest, highest, via = sa.func.min(account), sa.func.max(account), sa.func.min(probe.c.via)
    again, other = probe.alias("again"), assignment.alias("other")
    counted = (sa.select(sa.func.count(sa.distinct(other.c.account_id)))
               .select_from(again.join(other, _holds(again, other))).where(again.c.seq == probe.c.seq)
               .scalar_subquery())
    held = sa.case((sa.func.count(account) == 2, _text("2")), else_=sa.cast(counted, sa.String()))
    status = sa.case((lowest.is_(None), _text("unmatched")), (lowest == highest, _text("matched")),
                     else_=_text("ambiguous"))
    reason = sa.case(
        (sa.and_(lowest.is_(None), via.is_(None)), _text(_NO_IP_HOLDER)),
        (lowest.is_(None), _text("no account held private address ") + via + _text(" (CGNAT) at that time")),
        (sa.and_(lowest != highest, via.is_(None)),
         held + _text(" accounts held this address around that time; not guessed")),
        (lowest != highest, held + _text(" accounts held private address ") + via
         + _text(" (CGNAT) around that time; not guessed")),
    )
    return (sa.select(sa.func.min(probe.c.ref).label("ref"), status.label("status"),
                      sa.case((lowest == highest, lowest)).label("account_id"), reason.label("reason"))
            .select_from(probe.outerjoin(assignment, _holds(probe, assignment))).group_by(probe.c.seq))


# --- feeds ------------------------------------------------------------------------------------

_PENDING_ITEMS = ("SELECT id, identifier_kind, identifier, port, seen_at FROM feed_item "
                  "WHERE feed_id = ? AND id > ? AND status = 'pending' ORDER BY id LIMIT ?")


def match_feed(session: Session, feed_id: int | None, *, skew_seconds: float | None = None,
               batch_size: int = MATCH_BATCH) -> MatchCounts:
    """Resolve every pending item of a feed, a batch at a time; returns the totals over the feed.

    Each batch is read by `(feed_id, id)` from where the previous one ended (the partial index
    `ix_feed_item_pending`, which holds pending items only), so the feed is read once whatever its
    size. A feed imported from a file has no pending items left (`ItemResolver` decided them before
    they were stored): this is how items stored pending, or a feed set back to pending, are
    matched. Per batch: one query per contact kind, one NAT join (when blocks exist), one load of
    the probe table, and one `UPDATE feed_item … FROM` the outcome statement, which decides every
    address in the database; only the outcomes Python decided (contacts, CGNAT, items without an
    identifier or a time) go through the outcome table.
    """
    lengths = prefix_lengths(session)
    nat = nat_in_use(session)
    transport = _Transport(session, clock_skew(skew_seconds))
    with transport.scratch():
        last_id = 0
        while True:
            batch = transport.fetch(_PENDING_ITEMS, (feed_id, last_id, batch_size))
            if not batch:
                break
            first_id, last_id = batch[0][0], batch[-1][0]
            decided = _batch_outcomes(session, transport, batch, lengths, nat)
            _write_address_outcomes(transport, first_id=first_id, last_id=last_id)
            _write_outcomes(transport, decided, first_id=first_id, last_id=last_id)
            transport.clear()
    return feed_match_counts(session, feed_id)


def _batch_outcomes(session: Session, transport: _Transport, batch: Sequence[tuple], lengths: list[int],  # type: ignore[type-arg]
                    nat: bool) -> dict[int, Outcome]:
    """Loads the batch's address probes; returns the outcomes decided without them (contacts by
    kind, CGNAT decisions, items without an identifier or a time)."""
    outcomes: dict[int, Outcome] = {}
    sightings: list[_SightingRow] = []
    contacts = []
    for item_id, identifier_kind, identifier, port, seen_at in batch:
        if identifier_kind == "ip" and identifier and seen_at is not None:
            sightings.append((item_id, identifier, seen_at, port))
        elif identifier_kind in _CONTACT_COLUMNS and identifier:
            contacts.append((item_id, identifier_kind, identifier))
        elif not identifier or identifier_kind is None:
            outcomes[item_id] = ("unmatched", None, "no identifier")
        elif identifier_kind == "ip":
            outcomes[item_id] = ("unmatched", None, _NO_TIME)
        else:
            outcomes[item_id] = ("unmatched", None, f"cannot match identifier kind '{identifier_kind}'")
    if contacts:
        found = _contact_accounts(session, [(kind, identifier) for _, kind, identifier in contacts])
        for item_id, kind, identifier in contacts:
            outcomes[item_id] = _contact_outcome(sorted(found.get((kind, identifier), ())), kind)
    if sightings:
        outcomes.update(_probe_addresses(transport, sightings, lengths, nat))
    return outcomes


def _contact_outcome(accounts: list[int], identifier_kind: str) -> Outcome:
    if not accounts:
        return "unmatched", None, _no_contact_reason(identifier_kind)
    if len(accounts) > 1:
        return "ambiguous", None, f"{len(accounts)} accounts have this {identifier_kind.replace('_', ' ')}; not guessed"
    return "matched", accounts[0], None


# (ref, identifier kind, identifier, port, seen_at in the backend's raw form): an item before it is stored.
ItemRow = tuple[int, str | None, str | None, int | None, object]


class ItemResolver:
    """Outcomes of a new feed's items before they are stored, so that `import_feed` writes each
    item once, with its outcome, instead of inserting it `pending` and updating it.

    The update was most of matching's cost: it rewrites every row, and on PostgreSQL (where
    `account_id` is indexed, so the update is never HOT) adds an entry to every index of
    `feed_item` for the new row version. A batch goes through the same statements as in
    `match_feed` (`_batch_outcomes`, then the outcome statement read instead of joined into an
    UPDATE), so an item's outcome is the same either way. Use it as a context manager: the scratch
    tables (and SQLite's larger page cache) live for the whole import.
    """

    def __init__(self, session: Session, *, skew_seconds: float | None = None) -> None:
        self.session = session
        self.lengths = prefix_lengths(session)
        self.nat = nat_in_use(session)
        self.transport = _Transport(session, clock_skew(skew_seconds))
        self._scratch = self.transport.scratch()

    def __enter__(self) -> ItemResolver:
        self._scratch.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._scratch.__exit__(*exc_info)

    def outcomes(self, items: Sequence[ItemRow]) -> dict[int, Outcome]:
        """ref → outcome of every item (refs are the caller's, unique within the call; times in
        the raw form `own_time` gives, which is also what `store` writes)."""
        try:
            outcomes = _batch_outcomes(self.session, self.transport, items, self.lengths, self.nat)
            outcomes.update(_decided_addresses(self.transport))
            return outcomes
        finally:
            self.transport.clear()

    def own_time(self, moment: datetime | None) -> object:
        """A time in the backend's raw form, as `outcomes` and `store` take it."""
        return None if moment is None else self.transport.own_time(moment)

    def store(self, table: sa.Table, columns: Sequence[str], rows: Iterable[tuple[object, ...]]) -> None:
        """Rows in the backend's raw form (`own_time` for times) by the driver's bulk path (SQLite
        `executemany` of tuples, PostgreSQL `COPY`): per-row parameter processing cost more than
        deciding the outcomes."""
        self.transport.load(table, rows, columns)


def _write_address_outcomes(transport: _Transport, *, first_id: int, last_id: int) -> None:
    """Every probed item's outcome in one `UPDATE feed_item … FROM (outcome statement)`: no
    address outcome travels through Python. The id range keeps SQLite from walking the whole feed
    to join it (the outcome rows have no statistics)."""
    decided = _address_outcomes().subquery("address_outcome")
    items = FeedItem.__table__
    transport.execute(
        sa.update(items).values(status=decided.c.status, account_id=decided.c.account_id, reason=decided.c.reason)
        .where(items.c.id == decided.c.ref, items.c.id.between(first_id, last_id)))


def _write_outcomes(transport: _Transport, outcomes: dict[int, Outcome], *, first_id: int, last_id: int) -> None:
    """The outcomes decided in Python in one `UPDATE feed_item … FROM match_outcome` (see above for the range)."""
    if not outcomes:
        return
    transport.load(_OUTCOME, [(item_id, *outcome) for item_id, outcome in outcomes.items()])
    items, outcome = FeedItem.__table__, _OUTCOME
    transport.execute(
        sa.update(items).values(status=outcome.c.status, account_id=outcome.c.account_id, reason=outcome.c.reason)
        .where(items.c.id == outcome.c.item_id, items.c.id.between(first_id, last_id)))


def feed_match_counts(session: Session, feed_id: int | None) -> MatchCounts:
    rows = session.exec(
        select(FeedItem.status, sa.func.count()).where(FeedItem.feed_id == feed_id).group_by(FeedItem.status)
    ).all()
    by_status = dict(rows)
    return MatchCounts(matched=by_status.get("matched", 0), unmatched=by_status.get("unmatched", 0),
                       ambiguous=by_status.get("ambiguous", 0))
