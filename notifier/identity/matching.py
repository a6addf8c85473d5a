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

Matching is set-based, per batch of pending items: the batch's probes (item, network start per
prefix length, time window) go into a TEMPORARY table, one join per batch against the
`(range_start, covers_until)` index returns (item, distinct accounts, lowest account), and the
outcomes go back through one `UPDATE … FROM` a temporary outcome table. The same statements run
on SQLite and PostgreSQL, so an item's outcome never depends on the backend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.errors import MatchError
from notifier.identifiers import key_ip, key_network_start, stored_ip_key
from notifier.models import ContactPoint, FeedItem, IpAssignment, NatBlock, UtcDateTime
from notifier.settings import get_settings

# Items per round trip: large enough that per-statement costs vanish, small enough that a batch's
# probes and fetched rows stay a few megabytes whatever the feed's size.
MATCH_BATCH = 50_000
SINGLE_ADDRESS = 128  # prefix length of one address in `ip_key` space
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
    sa.Column("ref", sa.Integer, nullable=False),
    sa.Column("prefix_len", sa.Integer, nullable=False),
    sa.Column("net_start", sa.String(32), nullable=False),
    sa.Column("seen_lo", UtcDateTime(), nullable=False),  # seen_at − skew
    sa.Column("seen_hi", UtcDateTime(), nullable=False),  # seen_at + skew
    sa.Column("via", sa.String(64), nullable=True),  # the private address a CGNAT block led to
    prefixes=["TEMPORARY"],
)
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


_EPOCH = datetime(1970, 1, 1)


class _TextClock:
    """seen_at ± skew on SQLite's stored text (`YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC), without datetimes.

    Parsing one datetime and formatting two per event cost 1.7 µs, a third of the whole budget.
    A whole-second skew moves only the minute prefix (parsed and formatted once per distinct
    minute, then remembered) and the two seconds digits; the fraction is untouched. Text in any
    other form (no fraction, an offset) takes the datetime path, so the bounds are always exact.
    """

    def __init__(self, skew: timedelta) -> None:
        self.skew = skew
        self.whole = int(skew.total_seconds()) if skew.microseconds == 0 else None
        self._minute_number: dict[str, int] = {}
        self._minute_text: dict[int, str] = {}

    def bounds(self, text: str) -> tuple[str, str]:
        whole = self.whole
        if whole is not None and len(text) == 26 and text[19] == "." and text[16] == ":" and text[10] == " ":
            number = self._minute_number.get(text[:16])
            if number is None:
                number = self._learn(text[:16])
            digits = text[17:19]
            if number is not None and digits.isdigit() and digits < "60":
                second = number * 60 + int(digits)
                low, high, fraction = second - whole, second + whole, text[19:]
                return (f"{self._text(low // 60)}:{low % 60:02d}{fraction}",
                        f"{self._text(high // 60)}:{high % 60:02d}{fraction}")
        return self._slow(text)

    def _learn(self, minute: str) -> int | None:
        try:
            moment = datetime.fromisoformat(minute)
        except ValueError:
            return None
        if moment.tzinfo is not None:
            return None
        number = self._minute_number[minute] = int((moment - _EPOCH).total_seconds()) // 60
        return number

    def _text(self, number: int) -> str:
        text = self._minute_text.get(number)
        if text is None:
            text = self._minute_text[number] = (_EPOCH + timedelta(minutes=number)).isoformat(" ", "minutes")
        return text

    def _slow(self, text: str) -> tuple[str, str]:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return ((moment - self.skew).isoformat(" ", "microseconds"), (moment + self.skew).isoformat(" ", "microseconds"))


class _Transport:
    """How a batch's rows travel between Python and the scratch tables, by each driver's fastest path.

    The statements that decide outcomes are the same on both backends; only the bulk movement of
    rows differs, because per-row parameter processing would cost more than the matching itself:
    pending items are read through the driver's own cursor, probe rows go in by one `executemany`
    of plain tuples on SQLite and one `COPY` on PostgreSQL. A time inside a batch stays in the
    backend's raw form (SQLite's stored text, PostgreSQL's aware datetime), so none is converted
    twice, and the time bounds of a probe are computed in that form.
    """

    def __init__(self, session: Session, skew: timedelta) -> None:
        self.session = session
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.driver = self.connection.connection.driver_connection
        self.skew = skew
        self._text_clock = None if self.postgres else _TextClock(skew)
        self._keys: dict[str, str] = {}

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

    def own_time(self, moment: datetime) -> object:
        """An aware datetime from a caller → the backend's raw form."""
        moment = moment.astimezone(UTC)
        return moment if self.postgres else moment.replace(tzinfo=None).isoformat(" ", "microseconds")

    def bounds(self, seen: object) -> tuple[object, object]:
        """(seen − skew, seen + skew) of a raw time, ready to load."""
        if self._text_clock is not None:
            return self._text_clock.bounds(seen)  # type: ignore[arg-type]
        return seen - self.skew, seen + self.skew  # type: ignore[operator]

    def key(self, ip: str) -> str:
        """`stored_ip_key`, remembered: a feed names the same infected address many times."""
        key = self._keys.get(ip)
        if key is None:
            if len(self._keys) >= KEY_CACHE_LIMIT:
                self._keys.clear()
            key = self._keys[ip] = stored_ip_key(ip)
        return key

    def load(self, table: sa.Table, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        names = ", ".join(column.name for column in table.columns)
        if self.postgres:
            with self.driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in table.columns)
            self.driver.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)  # type: ignore[union-attr]

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """The scratch tables (and, on SQLite, a page cache that holds the lookup index) for the
        duration of the work; the pooled connection is left as it was."""
        previous_cache = None
        if not self.postgres:
            previous_cache = self.fetch("PRAGMA main.cache_size", ())[0][0]
            self.driver.execute(f"PRAGMA main.cache_size = -{SQLITE_MATCH_CACHE_KIB}")  # type: ignore[union-attr]
        for table in _SCRATCH.sorted_tables:
            self.session.execute(sa.schema.CreateTable(table, if_not_exists=True))
        try:
            yield
        finally:
            for table in _SCRATCH.sorted_tables:
                self.session.execute(sa.schema.DropTable(table, if_exists=True))
            if previous_cache is not None:
                self.driver.execute(f"PRAGMA main.cache_size = {int(previous_cache)}")  # type: ignore[union-attr]

    def clear(self) -> None:
        for table in _SCRATCH.sorted_tables:
            self.connection.exec_driver_sql(f"DELETE FROM {table.name}")


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
    """The prefix lengths assignments use (128 for single addresses): few, so each is one probe."""
    return sorted(session.exec(select(IpAssignment.prefix_len).distinct()).all(), reverse=True)


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
    transport = _Transport(session)
    _create_scratch(session)
    try:
        _insert_probes(transport, {ref: (stored_ip_key(ip), transport.own_time(seen_at))
                                   for ref, (ip, seen_at) in enumerate(sightings)}, lengths, clock_skew(skew_seconds))
        found: list[set[int]] = [set() for _ in sightings]
        for ref, account_id in session.execute(_holder_pairs()):
            found[ref].add(account_id)
        return [sorted(accounts) for accounts in found]
    finally:
        _drop_scratch(session)


def resolve_ips(session: Session, sightings: Sequence[Sighting], *, lengths: list[int] | None = None,
                skew_seconds: float | None = None, nat: bool | None = None) -> dict[int, Outcome]:
    """Outcome (status, account, reason) of every sighting under all the rules, CGNAT included."""
    lengths = prefix_lengths(session) if lengths is None else lengths
    nat = nat_in_use(session) if nat is None else nat
    transport = _Transport(session)
    _create_scratch(session)
    try:
        rows = [(s.ref, s.ip, transport.own_time(s.seen_at), s.port) for s in sightings]
        return _resolve_sightings(transport, rows, lengths, clock_skew(skew_seconds), nat)
    finally:
        _drop_scratch(session)


# (ref, normalised ip, seen_at in the backend's form, source port): a tuple, not an object, because
# a feed makes a million of them.
_SightingRow = tuple[int, str, datetime, int | None]
# (key to look up, seen_at, private address text for a CGNAT-resolved sighting or None)
_TargetRow = tuple[str, datetime, str | None]


def _resolve_sightings(transport: _Transport, sightings: Sequence[_SightingRow], lengths: list[int],
                       skew: timedelta, nat: bool) -> dict[int, Outcome]:
    """CGNAT decisions first, then one assignment join for every address still to look up."""
    outcomes: dict[int, Outcome] = {}
    targets: dict[int, _TargetRow] = {ref: (stored_ip_key(ip), seen, None) for ref, ip, seen, _ in sightings}
    if nat:
        hits = _nat_holders(transport, sightings, targets, skew)
        for ref, ip, seen, port in sightings:
            if ref in hits:
                decided, private = _nat_outcome(port, *hits[ref])
                if decided is not None:
                    outcomes[ref] = decided
                    del targets[ref]
                elif private is not None:
                    targets[ref] = (private, seen, key_ip(private))
    holders = _assignment_holders(transport, targets, lengths, skew)
    nobody: tuple[int, int | None] = (0, None)
    for ref, (_, _, private) in targets.items():
        count, first = holders.get(ref, nobody)
        if count == 1:
            outcomes[ref] = ("matched", first, None)
        elif private is None:
            outcomes[ref] = ("unmatched", None, _NO_IP_HOLDER) if count == 0 else (
                "ambiguous", None, f"{count} accounts held this address around that time; not guessed")
        else:
            outcomes[ref] = ("unmatched", None, f"no account held private address {private} (CGNAT) at that time") \
                if count == 0 else ("ambiguous", None,
                                    f"{count} accounts held private address {private} (CGNAT) around that time; "
                                    "not guessed")
    return outcomes


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


def _nat_holders(transport: _Transport, sightings: Sequence[_SightingRow], targets: dict[int, _TargetRow],
                 skew: timedelta) -> dict[int, tuple[int, str | None]]:
    """ref → (distinct private addresses that fit, lowest of them) for every sighting whose address
    is the public side of a NAT block around that time; the others are absent."""
    bind = transport.bind_time
    transport.load(_NAT_PROBE, [(ref, targets[ref][0], port, bind(seen - skew), bind(seen + skew))
                                for ref, _, seen, port in sightings])
    probe, block = _NAT_PROBE, NatBlock.__table__
    fits = sa.or_(probe.c.port.is_(None), sa.and_(block.c.port_start <= probe.c.port, probe.c.port <= block.c.port_end))
    holder = sa.case((fits, block.c.private_key))
    query = (sa.select(probe.c.ref, sa.func.count(sa.distinct(holder)), sa.func.min(holder))
             .select_from(probe.join(block, sa.and_(block.c.public_key == probe.c.public_key,
                                                    block.c.covers_until > probe.c.seen_lo,
                                                    block.c.allocated_at <= probe.c.seen_hi)))
             .group_by(probe.c.ref))
    return {ref: (count, first) for ref, count, first in transport.connection.execute(query)}


def _assignment_holders(transport: _Transport, targets: dict[int, _TargetRow], lengths: list[int],
                        skew: timedelta) -> dict[int, tuple[int, int | None]]:
    """ref → (distinct accounts whose widened interval holds the time, lowest of them); refs
    nobody held are absent. One statement for the whole batch."""
    if not targets or not lengths:
        return {}
    _insert_probes(transport, {ref: (key, seen) for ref, (key, seen, _) in targets.items()}, lengths, skew)
    account = IpAssignment.__table__.c.account_id
    query = (sa.select(_PROBE.c.ref, sa.func.count(sa.distinct(account)), sa.func.min(account))
             .select_from(_holder_join()).group_by(_PROBE.c.ref))
    return {ref: (count, first) for ref, count, first in transport.connection.execute(query)}


def _insert_probes(transport: _Transport, wanted: dict[int, tuple[str, datetime]], lengths: list[int],
                   skew: timedelta) -> None:
    """One probe row per (sighting, prefix length in use): the network that would hold the address."""
    bind = transport.bind_time
    rows: list[tuple[object, ...]] = []
    for ref, (key, seen) in wanted.items():
        seen_lo, seen_hi = bind(seen - skew), bind(seen + skew)
        for length in lengths:
            rows.append((ref, length, key if length == SINGLE_ADDRESS else key_network_start(key, length),
                         seen_lo, seen_hi))
    transport.load(_PROBE, rows)


def _holder_pairs() -> sa.Select:  # type: ignore[type-arg]
    """(ref, account) for every assignment whose widened interval holds a probe's time."""
    return sa.select(_PROBE.c.ref, IpAssignment.__table__.c.account_id).select_from(_holder_join()).distinct()


def _holder_join() -> sa.Join:
    """Probes joined to the assignments whose widened interval holds the probe's time.

    [started_at − skew, covers_until + skew) holds t  ⇔  covers_until > t − skew AND
    started_at <= t + skew: the first half is the range of the index (range_start, covers_until).
    `prefix_len` keeps a probe for a /120 from finding a single address that starts that network.
    """
    probe, assignment = _PROBE, IpAssignment.__table__
    return probe.join(assignment, sa.and_(assignment.c.range_start == probe.c.net_start,
                                          assignment.c.covers_until > probe.c.seen_lo,
                                          assignment.c.started_at <= probe.c.seen_hi,
                                          assignment.c.prefix_len == probe.c.prefix_len))


# --- feeds ------------------------------------------------------------------------------------


def match_feed(session: Session, feed_id: int | None, *, skew_seconds: float | None = None,
               batch_size: int = MATCH_BATCH) -> MatchCounts:
    """Resolve every pending item of a feed, a batch at a time; returns the totals over the feed.

    Each batch is read by `(feed_id, id)` from where the previous one ended (index
    `ix_feed_item_feed_id`), so the feed is read once whatever its size; contacts cost one query per
    batch and kind, addresses one NAT join (when blocks exist) and one assignment join per batch,
    and the outcomes one `UPDATE … FROM`.
    """
    items = FeedItem.__table__
    lengths = prefix_lengths(session)
    nat = nat_in_use(session)
    skew = clock_skew(skew_seconds)
    transport = _Transport(session)
    raw_seen_at = sa.literal_column(f"{items.name}.seen_at")  # untyped: the driver's value, see _Transport
    _create_scratch(session)
    try:
        last_id = 0
        while True:
            batch = transport.connection.execute(
                sa.select(items.c.id, items.c.identifier_kind, items.c.identifier, items.c.port, raw_seen_at)
                .where(items.c.feed_id == feed_id, items.c.id > last_id, items.c.status == "pending")
                .order_by(items.c.id).limit(batch_size)
            ).all()
            if not batch:
                break
            outcomes = _batch_outcomes(session, transport, batch, lengths, skew, nat)
            _write_outcomes(transport, outcomes, first_id=batch[0][0], last_id=batch[-1][0])
            _clear_scratch(session)
            last_id = batch[-1][0]
    finally:
        _drop_scratch(session)
    return feed_match_counts(session, feed_id)


def _batch_outcomes(session: Session, transport: _Transport, batch: Sequence[sa.Row], lengths: list[int],  # type: ignore[type-arg]
                    skew: timedelta, nat: bool) -> dict[int, Outcome]:
    """item id → outcome for one batch: contacts by kind, addresses set-based, the rest by rule."""
    outcomes: dict[int, Outcome] = {}
    sightings: list[_SightingRow] = []
    contacts = []
    raw_time = transport.raw_time
    for item_id, identifier_kind, identifier, port, seen_at in batch:
        if identifier_kind == "ip" and identifier and seen_at is not None:
            sightings.append((item_id, identifier, raw_time(seen_at), port))
        elif identifier_kind in _CONTACT_COLUMNS and identifier:
            contacts.append((item_id, identifier_kind, identifier))
        elif not identifier or identifier_kind is None:
            outcomes[item_id] = ("unmatched", None, "no identifier")
        elif identifier_kind == "ip":
            outcomes[item_id] = ("unmatched", None, _NO_TIME)
        else:
            outcomes[item_id] = ("unmatched", None, f"cannot match identifier kind '{identifier_kind}'")
    found = _contact_accounts(session, [(kind, identifier) for _, kind, identifier in contacts])
    for item_id, kind, identifier in contacts:
        outcomes[item_id] = _contact_outcome(sorted(found.get((kind, identifier), ())), kind)
    outcomes.update(_resolve_sightings(transport, sightings, lengths, skew, nat))
    return outcomes


def _contact_outcome(accounts: list[int], identifier_kind: str) -> Outcome:
    if not accounts:
        return "unmatched", None, _no_contact_reason(identifier_kind)
    if len(accounts) > 1:
        return "ambiguous", None, f"{len(accounts)} accounts have this {identifier_kind.replace('_', ' ')}; not guessed"
    return "matched", accounts[0], None


def _write_outcomes(transport: _Transport, outcomes: dict[int, Outcome], *, first_id: int, last_id: int) -> None:
    """All of a batch's outcomes in one `UPDATE feed_item … FROM match_outcome`.

    The id range is not redundant: without statistics on the scratch table SQLite would drive the
    join from feed_item and walk the whole feed for every batch; bounded, it reads the batch only.
    """
    transport.load(_OUTCOME, [(item_id, *outcome) for item_id, outcome in outcomes.items()])
    items, outcome = FeedItem.__table__, _OUTCOME
    transport.connection.execute(
        sa.update(items).values(status=outcome.c.status, account_id=outcome.c.account_id, reason=outcome.c.reason)
        .where(items.c.id == outcome.c.item_id, items.c.id.between(first_id, last_id)))


# --- scratch tables ---------------------------------------------------------------------------


def _create_scratch(session: Session) -> None:
    for table in _SCRATCH.sorted_tables:
        session.execute(sa.schema.CreateTable(table, if_not_exists=True))


def _clear_scratch(session: Session) -> None:
    for table in _SCRATCH.sorted_tables:
        session.execute(sa.delete(table))


def _drop_scratch(session: Session) -> None:
    """Leave the pooled connection as it was: the next user need not know these tables existed."""
    for table in _SCRATCH.sorted_tables:
        session.execute(sa.schema.DropTable(table, if_exists=True))


def feed_match_counts(session: Session, feed_id: int | None) -> MatchCounts:
    rows = session.exec(
        select(FeedItem.status, sa.func.count()).where(FeedItem.feed_id == feed_id).group_by(FeedItem.status)
    ).all()
    by_status = dict(rows)
    return MatchCounts(matched=by_status.get("matched", 0), unmatched=by_status.get("unmatched", 0),
                       ambiguous=by_status.get("ambiguous", 0))
