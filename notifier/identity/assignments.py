"""Store IP assignment sources: which account used which address when (formats.md, "IP assignments").

The parsers in `notifier.ingest` decide what is valid; this module persists, in batches, and keeps
the intervals right for matching:

- The account is the record's `account_ref`, or, when a source names only a user (RADIUS), the one
  account whose contact points list that `username`. Unknown ones are rejected lines.
- (range_start, started_at, account_id) names one row: a row seen again only gains its end or a
  later `open_until`, so the same file twice changes nothing and a later log that closes a session
  updates it. `covers_until` is always `ended_at`, else `open_until`, else OPEN_END. The key is kept
  unique here, not by an index (migration 0010: one B-tree insert per row fewer): each batch reads
  the stored rows it may repeat through the cover index (`_STORED_KEYS_SQL`), updates those and inserts
  the rest, under the database's one writer (SQLite) or an advisory lock (PostgreSQL), so no
  concurrent import can add the same row in between. That lookup relies on every stored interval
  covering at least its own start: the parsers refuse an end before the start (RADIUS ends an
  address that appeared after its session's end where it began), the closing rule ends a session
  at a later start.
- A record with a `session_ref` whose row exists (same source, session_ref, range_start) updates
  that row: a Stop in a later file closes the Start of an earlier one.
- A session with no end stays open until the next start on the same address (same range) by another
  account: every still-open interval is ended there, whichever file came first. One statement per
  batch (`_CLOSE_SQL`).

Speed (issue 7: ≥ 200,000 sessions-csv records/s into SQLite, ≥ 100,000 into PostgreSQL, into a
table of millions): one statement per batch for each step, parameters as plain tuples through the
driver (SQLAlchemy's per-row type processing would cost more than the insert itself), on SQLite
`executemany` of an `INSERT` sorted by key with a larger page cache for the import, on PostgreSQL
binary `COPY` straight into the table.
Memory stays flat: the file is streamed a batch at a time; the only state kept between batches is
a bounded cache of account ids.
"""

from __future__ import annotations

import gc
import inspect
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from notifier.batching import chunks
from notifier.bulk_copy import copy_rows
from notifier.db import empty_scratch_tables, plan_each_execution, sqlite_page_cache, sqlite_time
from notifier.errors import InputError
from notifier.identifiers import parse_timestamp
from notifier.import_result import ImportResult
from notifier.ingest import get_assignment_parser
from notifier.ingest.assignments import FAST_ASSIGNMENT_FORMATS, AssignmentRow, assignment_row
from notifier.ingest.records import NatEventRecord, Rejection, SessionRecord
from notifier.models import OPEN_END, IpAssignment, NatBlock
from notifier.settings import Settings, get_settings

# Rows per statement. Each batch is written in address order, so a larger one visits the pages of the
# cover index more in order (3 million records into SQLite: 17.4 µs a record at 10,000, 14.9 at
# 50,000, 14.0 at 100,000, which took peak RSS near 500 MB); a batch holds ~40 MB of Python objects.
BATCH_ROWS = 50_000
LOOKUP_CHUNK = 5_000  # values per IN (…) when loading account ids
MAX_CACHED_ACCOUNTS = 100_000  # ~16 MB of ids; emptied past it, so memory stays flat for any file
# Page cache while importing (the default is 2 MiB), the same 256 MiB as matching's: every row lands at
# a random page of the cover index, which past a few million rows outgrew 128 MiB (measured, 3 M rows:
# 24.6 → 20.5 µs a record, 34.3 → 27.1 into the filled table; peak RSS 257 → 400 MiB).
SQLITE_IMPORT_CACHE_KIB = 262_144
PURGE_BATCH = 10_000

_COLUMNS = ("account_id", "network", "range_start", "range_end", "prefix_len", "started_at", "ended_at",
            "open_until", "covers_until", "source", "username", "session_ref")
_SQLITE_OPEN_END = "9000-01-01 00:00:00.000000"  # OPEN_END as SQLAlchemy stores it on SQLite


# The keys of the stored rows a batch may repeat: on each range it touches, the rows covering past
# its earliest start there. A stored interval covers at least its own start, so a row with a batch
# row's range, start and account is among them; on a daily log that is about one row (the open
# one) per address. Read from the cover index alone, whose (range_start, covers_until) lead is this
# lookup and which holds the key. PostgreSQL: LATERAL + OFFSET 0 as in the closing rule below, so
# it probes the index per range whatever the (absent) statistics of the temporary table.
_STORED_KEYS_SQL = """
SELECT stored.id, stored.range_start, stored.started_at, stored.account_id
FROM assignment_batch_range AS batch
CROSS JOIN {stored}
"""
# What an update compares, for the rows a batch does repeat (by id: {ids} is the id list).
_STORED_SQL = "SELECT id, ended_at, open_until, session_ref, username FROM ip_assignment WHERE id {ids}"
_STORED_SQLITE = """ip_assignment AS stored
  ON stored.range_start = batch.range_start AND stored.covers_until >= batch.since"""
_STORED_POSTGRES = """LATERAL (
    SELECT candidate.id, candidate.range_start, candidate.started_at, candidate.account_id
    FROM ip_assignment AS candidate
    WHERE candidate.range_start = batch.range_start AND candidate.covers_until >= batch.since
    OFFSET 0
) AS stored"""
_UPDATE_SQL = ("UPDATE ip_assignment SET ended_at = {0}, open_until = {0}, covers_until = {0}, session_ref = {0}, "
               "username = {0} WHERE id = {0}")
_INSERT_SQL = f"INSERT INTO ip_assignment ({', '.join(_COLUMNS)}) VALUES ({{marks}})"

Stored = tuple[Any, ...]  # a _STORED_KEYS_SQL or _STORED_SQL row
Values = tuple[Any, ...]  # one row in _COLUMNS order, times as the writer's driver takes them


def _updated(new: Values, stored: Stored, open_end: Any) -> Values | None:
    """The UPDATE parameters (ended_at, open_until, covers_until, session_ref, username, id) when
    the row `new` repeats says more than the stored one, else None: a given end wins, open_until only
    grows, a missing session id or username is filled in, nothing else changes."""
    row_id, old_ended, old_open, old_ref, old_user = stored
    ended, open_until, ref = new[6], new[7], new[11]
    if not ((ended is not None and ended != old_ended)
            or (open_until is not None and (old_open is None or open_until > old_open))
            or (old_ref is None and ref is not None)):
        return None
    if ended is None:
        ended = old_ended
    if old_open is not None and (open_until is None or open_until <= old_open):
        open_until = old_open
    return (ended, open_until, ended or open_until or open_end, ref if old_ref is None else old_ref,
            new[10] if old_user is None else old_user, row_id)


# The closing rule, for every range the batch touched: an interval still open (no ended_at) that
# reaches past a later start by another account on the same range ends at the earliest such start.
# The join must start from the batch's ranges and probe the (range_start, covers_until) index, which
# reads only intervals reaching into the batch's time on that range, not an address's whole history
# (a later interval covers past its start, so past the held one's: `later.covers_until` bounds it):
# a scan of the table per batch would make an import quadratic. Planners are told so: SQLite by
# CROSS JOIN (its left table is the outer loop), PostgreSQL by a LATERAL subquery that OFFSET 0 keeps
# from being flattened into a hash join (temporary tables have no statistics to plan by).
_CLOSE_SQL = """
UPDATE ip_assignment SET ended_at = closing.close_at, covers_until = closing.close_at
FROM (
    SELECT held.id AS id, MIN(later.started_at) AS close_at
    FROM {held_join}
    {join} ip_assignment AS later
      ON later.range_start = held.range_start AND later.covers_until > held.started_at
    WHERE later.started_at > held.started_at AND later.started_at < held.covers_until
      AND later.prefix_len = held.prefix_len AND later.account_id <> held.account_id
    GROUP BY held.id
) AS closing
WHERE ip_assignment.id = closing.id
"""
_HELD_SQLITE = """assignment_batch_range AS batch
    CROSS JOIN ip_assignment AS held
      ON held.range_start = batch.range_start AND held.covers_until > batch.since
     AND held.ended_at IS NULL AND held.prefix_len = batch.prefix_len"""
_HELD_POSTGRES = """assignment_batch_range AS batch
    CROSS JOIN LATERAL (
        SELECT open.id, open.range_start, open.prefix_len, open.started_at, open.covers_until, open.account_id
        FROM ip_assignment AS open
        WHERE open.range_start = batch.range_start AND open.covers_until > batch.since
          AND open.ended_at IS NULL AND open.prefix_len = batch.prefix_len
        OFFSET 0
    ) AS held"""


# --- import ---------------------------------------------------------------------------------------


def import_assignments(session: Session, path: Path, *, fmt: str, tz: str,
                       settings: Settings | None = None) -> ImportResult:
    """Store an assignment source a batch at a time (module docstring: semantics and speed).

    Safe to run again with the same file, or with a later file that closes sessions of an earlier
    one. CGNAT logs (`NatEventRecord`) go to `notifier.identity.nat.store_nat_events`.
    """
    settings = settings or get_settings()
    result = ImportResult()
    accounts = _AccountCache(session)
    with _without_cyclic_gc(), _writer(session, fmt) as writer:
        for chunk in chunks(_items(path, fmt=fmt, tz=tz, settings=settings), BATCH_ROWS):
            _import_chunk(session, writer, accounts, chunk, result)
    result.errors.sort(key=lambda error: int(error["line"]))  # type: ignore[arg-type]
    return result


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Suspend the cycle collector for the import: it allocates millions of tuples and datetimes
    (no cycles among them), and Python's collector walked every live object again and again — a
    third of the import's Python time (measured: 14.5 → 10.0 µs a row). Reference counting still
    frees each batch; a collection runs when the collector is switched back on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


Item = AssignmentRow | NatEventRecord | Rejection


def _items(path: Path, *, fmt: str, tz: str, settings: Settings) -> Iterator[Item]:
    """The source as rows (fast reader when the format has one), NAT events and rejections."""
    parser = get_assignment_parser(fmt)  # InputError for an unknown format, whichever reader runs
    fast = FAST_ASSIGNMENT_FORMATS.get(fmt)
    if fast is not None:
        yield from fast(path, tz=tz)
        return
    options: dict[str, Any] = {"tz": tz}
    if "max_session_hours" in inspect.signature(parser).parameters:
        options["max_session_hours"] = settings.identity.max_session_hours
    for item in parser(path, **options):
        if isinstance(item, SessionRecord):
            try:
                yield assignment_row(item)
            except ValueError as exc:
                yield Rejection(item.line, str(exc), "")
        else:
            yield item  # type: ignore[misc]


def _import_chunk(session: Session, writer: _Writer, accounts: _AccountCache, chunk: list[Item],
                  result: ImportResult) -> None:
    rows = [item for item in chunk if isinstance(item, AssignmentRow)]
    nat_events = [item for item in chunk if isinstance(item, NatEventRecord)]
    for item in chunk:
        if isinstance(item, Rejection):
            result.reject(item)
    if nat_events:
        from notifier.identity.nat import store_nat_events  # only CGNAT imports need it

        store_nat_events(session, nat_events, result)
    if not rows:
        return
    owned, unknown = accounts.resolve(rows)
    for rejection in unknown:
        result.reject(rejection)
    writer.write(owned)
    result.accepted += len(owned)


# --- accounts -------------------------------------------------------------------------------------


class _AccountCache:
    """Account ids by account_ref and by RADIUS username, loaded a batch's missing keys at a time.

    Bounded (emptied past MAX_CACHED_ACCOUNTS) so a file naming millions of accounts keeps memory
    flat; a log names the same subscribers again and again, so most batches load little.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._by_ref: dict[str, int] = {}
        self._by_username: dict[str, int | str] = {}  # id, or the reason it names no single account

    def resolve(self, rows: list[AssignmentRow]) -> tuple[list[tuple[int, AssignmentRow]], list[Rejection]]:
        """(account id, row) for rows whose account is known; a Rejection for each other row."""
        self._load_refs({row.account_ref for row in rows if row.account_ref is not None})
        self._load_usernames({row.username for row in rows if row.account_ref is None and row.username is not None})
        by_ref = self._by_ref
        owned = [(account_id, row) for row, account_id in zip(rows, map(by_ref.get, [row[1] for row in rows]))
                 if account_id is not None]
        if len(owned) == len(rows):
            return owned, []
        owned, unknown = [], []
        for row in rows:
            found = by_ref.get(row.account_ref) if row.account_ref is not None else None
            if found is None:
                found = self._account_by_name(row)
            if isinstance(found, int):
                owned.append((found, row))
            else:
                unknown.append(Rejection(row.line, found, ""))
        return owned, unknown

    def _account_by_name(self, row: AssignmentRow) -> int | str:
        if row.account_ref is not None:
            return f"unknown account '{row.account_ref}'"
        if row.username is None:
            return "no account_id and no username"
        return self._by_username[row.username]

    def _load_refs(self, wanted: set[str]) -> None:
        """Make sure the batch's refs are in the cache (unknown ones simply stay absent)."""
        refs = wanted - self._by_ref.keys()
        if len(self._by_ref) + len(refs) > MAX_CACHED_ACCOUNTS:
            self._by_ref.clear()
            refs = wanted
        for part in chunks(sorted(refs), LOOKUP_CHUNK):
            self._by_ref.update((ref, account_id) for account_id, ref in _lookup(
                self._session, "SELECT id, account_ref FROM account WHERE account_ref {in_values}", part))

    def _load_usernames(self, usernames: set[str]) -> None:
        """A username on no account, or on several, names no account: its lines are rejected with
        a reason that does not repeat it (usernames often hold a phone number or a name)."""
        wanted, usernames = usernames, usernames - self._by_username.keys()
        if len(self._by_username) + len(usernames) > MAX_CACHED_ACCOUNTS:
            self._by_username.clear()
            usernames = wanted
        holders: dict[str, set[int]] = {name: set() for name in usernames}
        for part in chunks(sorted(usernames), LOOKUP_CHUNK):
            for account_id, value in _lookup(self._session, "SELECT account_id, value FROM contact_point "
                                             "WHERE kind = 'username' AND value {in_values}", part):
                holders[value].add(account_id)
        for name, ids in holders.items():
            if len(ids) == 1:
                self._by_username[name] = next(iter(ids))
            elif ids:
                self._by_username[name] = f"username listed on {len(ids)} accounts (fix the subscriber import)"
            else:
                self._by_username[name] = "unknown username (no account lists it in `usernames`)"


def _lookup(session: Session, sql: str, values: list[str]) -> sa.CursorResult[Any]:
    """Run `sql` with `{in_values}` standing for "IN (the values)", passed as one parameter (a
    JSON array on SQLite, an array on PostgreSQL): compiling thousands of bound parameters per
    statement costs more than the lookup itself."""
    if session.get_bind().dialect.name == "sqlite":
        query = sql.format(in_values="IN (SELECT value FROM json_each(:values))")
        return session.connection().execute(sa.text(query), {"values": json.dumps(values)})
    query = sql.format(in_values="= ANY(CAST(:values AS text[]))")
    return session.connection().execute(sa.text(query), {"values": values})


# --- merging a batch -------------------------------------------------------------------------------

# range_start: index pages in key order; the sort is stable, so a range keeps its rows in line order
_ORDER = operator.itemgetter(2)


@dataclass
class _Interval:
    """A batch's records of one session folded together (sources with session ids or bounds)."""

    account_id: int
    row: AssignmentRow
    ended_at: datetime | None
    open_until: datetime | None
    existing_id: int | None = None  # the stored row its session_ref pointed at
    changed: bool = True  # False when that stored row already says all this

    def fold(self, ended_at: datetime | None, open_until: datetime | None) -> None:
        """A later record of the same interval: a given end wins, open_until only grows."""
        self.ended_at = ended_at or self.ended_at
        if open_until is not None and (self.open_until is None or open_until > self.open_until):
            self.open_until = open_until

    def attach(self, row_id: int, ended_at: datetime | None, open_until: datetime | None) -> None:
        """This interval is the stored row `row_id` (same source, session_ref and range)."""
        before = (ended_at, open_until)
        self.existing_id = row_id
        self.ended_at = self.ended_at or ended_at
        self.fold(None, open_until)
        self.changed = (self.ended_at, self.open_until) != before

    @property
    def covers_until(self) -> datetime:
        return self.ended_at or self.open_until or OPEN_END


def _merge_sessions(owned: list[tuple[int, AssignmentRow]]) -> list[_Interval]:
    """Fold records of one session (same session_ref and range), then of one unique key, in line
    order. Needed for correctness too: PostgreSQL refuses an upsert touching one row twice."""
    merged: dict[tuple[Any, ...], _Interval] = {}
    for account_id, row in owned:
        key = ((row.session_ref, row.range_start) if row.session_ref is not None
               else (row.range_start, row.started_at, account_id))
        if key in merged:
            merged[key].fold(row.ended_at, row.open_until)
        else:
            merged[key] = _Interval(account_id, row, row.ended_at, row.open_until)
    by_key: dict[tuple[Any, ...], _Interval] = {}  # two sessions may still share the unique key
    for interval in merged.values():
        key = (interval.row.range_start, interval.row.started_at, interval.account_id)
        if key in by_key:
            by_key[key].fold(interval.ended_at, interval.open_until)
        else:
            by_key[key] = interval
    return list(by_key.values())


# --- writing --------------------------------------------------------------------------------------


class _Writer:
    """Writes one batch: session_ref matches as updates, rows the table holds already as updates,
    the others as inserts, then the closing rule. Subclasses differ in how rows reach the database
    and how times are passed (`time`)."""

    open_end: Any
    close_sql: str
    stored_keys_sql: str
    stored_sql: str

    def __init__(self, session: Session, source: str) -> None:
        self.session = session
        self.source = source
        self.dbapi = session.connection().connection.dbapi_connection

    @staticmethod
    def time(moment: datetime | None) -> Any:
        return moment

    def write(self, owned: list[tuple[int, AssignmentRow]]) -> None:
        if not owned:
            return
        if any(row.session_ref is not None or row.open_until is not None for _, row in owned):
            values = self._session_values(owned)
        else:
            values = self._plain_values(owned)
        values.sort(key=_ORDER)
        self._fill_ranges(_range_starts(values))
        new, changed = self._split(values)
        self._insert(new)
        if changed:
            self._update(changed)
        self.session.execute(sa.text(self.close_sql))

    def _split(self, values: list[Values]) -> tuple[list[Values], list[Values]]:
        """(rows to insert, UPDATE parameters for stored rows the batch repeats with more to say);
        a repeat saying nothing new is dropped. Needs the batch's ranges filled in."""
        stored_ids = {(row[1], row[2], row[3]): row[0] for row in self._fetch(self.stored_keys_sql)}
        new: list[Values] = []
        repeats: dict[int, Values] = {}
        for value in values:
            row_id = stored_ids.get((value[2], value[5], value[0]))
            if row_id is None:
                new.append(value)
            else:
                repeats[row_id] = value
        if not repeats:
            return new, []
        updates = (_updated(repeats[row[0]], row, self.open_end) for row in self._stored(list(repeats)))
        return new, [update for update in updates if update is not None]

    def _plain_values(self, owned: list[tuple[int, AssignmentRow]]) -> list[Values]:
        """Rows of a batch without session ids or bounds (sessions-csv): no objects, one tuple each;
        a repeated key keeps the last given end."""
        time, source, open_end = self.time, self.source, self.open_end
        by_key: dict[tuple[str, Any, int], Values] = {}
        for account_id, row in owned:
            started = time(row.started_at)
            ended = None if row.ended_at is None else time(row.ended_at)
            key = (row.range_start, started, account_id)
            if ended is None and key in by_key:
                ended = by_key[key][6]
            by_key[key] = (account_id, row.network, row.range_start, row.range_end, row.prefix_len, started,
                           ended, None, ended or open_end, source, row.username, None)
        return list(by_key.values())

    def _session_values(self, owned: list[tuple[int, AssignmentRow]]) -> list[Values]:
        """Rows of a batch with session ids or bounds: sessions already stored are updated in
        place; the rest go to the upsert. Returns every interval, for the closing rule."""
        intervals = _merge_sessions(owned)
        self._attach_sessions([i for i in intervals if i.row.session_ref is not None])
        updates = [i for i in intervals if i.existing_id is not None and i.changed]
        if updates:
            table = IpAssignment.__table__
            self.session.execute(
                sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                .values(ended_at=sa.bindparam("b_ended"), open_until=sa.bindparam("b_open"),
                        covers_until=sa.bindparam("b_covers")),
                [{"b_id": i.existing_id, "b_ended": i.ended_at, "b_open": i.open_until, "b_covers": i.covers_until}
                 for i in updates])
        time = self.time
        return [(i.account_id, i.row.network, i.row.range_start, i.row.range_end, i.row.prefix_len,
                 time(i.row.started_at), time(i.ended_at), time(i.open_until), time(i.covers_until), self.source,
                 i.row.username, i.row.session_ref) for i in intervals if i.existing_id is None]

    def _attach_sessions(self, intervals: list[_Interval]) -> None:
        """Point each interval with a session_ref at the stored row of that session on that range."""
        table = IpAssignment.__table__
        wanted = {(i.row.session_ref, i.row.range_start): i for i in intervals}
        connection = self.session.connection()
        for part in chunks(sorted({ref for ref, _ in wanted}), LOOKUP_CHUNK):
            for row in connection.execute(
                    sa.select(table.c.id, table.c.session_ref, table.c.range_start, table.c.ended_at,
                              table.c.open_until)
                    .where(table.c.source == self.source, table.c.session_ref.in_(part))):
                interval = wanted.get((row.session_ref, row.range_start))
                if interval is not None and interval.existing_id is None:
                    interval.attach(row.id, row.ended_at, row.open_until)

    def _fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Stored]:
        """Every row of a query, through the driver (times in the writer's raw form)."""
        raise NotImplementedError

    def _stored(self, ids: list[int]) -> list[Stored]:
        """The _STORED_SQL rows of these ids."""
        raise NotImplementedError

    def _insert(self, values: list[Values]) -> None:
        """Add the batch's new rows."""
        raise NotImplementedError

    def _update(self, changes: list[Values]) -> None:
        """Apply `_updated` results (parameters of _UPDATE_SQL)."""
        raise NotImplementedError

    def _fill_ranges(self, since: list[tuple[str, int, Any]]) -> None:
        """Replace the temporary range table's rows with this batch's (`_range_starts`)."""
        raise NotImplementedError


def _range_starts(values: list[Values]) -> list[tuple[str, int, Any]]:
    """(range_start, prefix_len, earliest start) per range of a batch."""
    since: dict[tuple[str, int], Any] = {}
    for row in values:
        key = (row[2], row[4])
        if key not in since or row[5] < since[key]:
            since[key] = row[5]
    return [(start, length, moment) for (start, length), moment in since.items()]


class _SqliteWriter(_Writer):
    """executemany through the sqlite3 cursor, on a temporary range table for the closing rule."""

    open_end = _SQLITE_OPEN_END
    close_sql = _CLOSE_SQL.format(held_join=_HELD_SQLITE, join="CROSS JOIN")
    stored_keys_sql = _STORED_KEYS_SQL.format(stored=_STORED_SQLITE)
    stored_sql = _STORED_SQL.format(ids="IN (SELECT value FROM json_each(?))")
    insert_sql = _INSERT_SQL.format(marks=", ".join("?" * len(_COLUMNS)))
    update_sql = _UPDATE_SQL.format("?")

    def __init__(self, session: Session, source: str) -> None:
        super().__init__(session, source)
        self.cursor = self.dbapi.cursor()
        # No key: `_range_starts` gives each range once and the table is only ever the outer loop
        # of a join, so an index would be a B-tree insert per range for nothing (0.5 µs a row).
        self.cursor.execute("CREATE TEMP TABLE IF NOT EXISTS assignment_batch_range "
                            "(range_start TEXT, prefix_len INTEGER, since TEXT)")

    time = staticmethod(sqlite_time)  # stored times are compared as text: SQLAlchemy's exact form

    def _fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Stored]:
        return self.cursor.execute(sql, parameters).fetchall()

    def _stored(self, ids: list[int]) -> list[Stored]:
        return self._fetch(self.stored_sql, (json.dumps(ids),))  # one parameter, as `_lookup` does

    def _insert(self, values: list[Values]) -> None:
        self.cursor.executemany(self.insert_sql, values)

    def _update(self, changes: list[Values]) -> None:
        self.cursor.executemany(self.update_sql, changes)

    def _fill_ranges(self, since: list[tuple[str, int, Any]]) -> None:
        empty_scratch_tables(self.session.connection(), "assignment_batch_range")
        self.cursor.executemany("INSERT INTO assignment_batch_range VALUES (?, ?, ?)", since)

    def tuned(self) -> AbstractContextManager[None]:
        """A larger page cache for the import (`db.sqlite_page_cache`). (`temp_store` is left
        alone: changing it drops every temporary table of the connection, the caller's included.)"""
        return sqlite_page_cache(self.cursor, SQLITE_IMPORT_CACHE_KIB)


_RANGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS assignment_batch_range (
    range_start text, prefix_len integer, since timestamptz, PRIMARY KEY (range_start, prefix_len)
) ON COMMIT DROP
"""
_ROW_TYPES = ["int4", "text", "text", "text", "int4", "timestamptz", "timestamptz", "timestamptz",
              "timestamptz", "text", "text", "text"]  # _COLUMNS for binary COPY
# Serializes assignment imports on PostgreSQL for their transaction (the key is kept unique by the
# importer, module docstring); an arbitrary constant that names this lock ("ipas").
_IMPORT_LOCK_KEY = 0x69706173


class _PostgresWriter(_Writer):
    """Binary COPY of new rows straight into the table; the batch's ranges into a temporary one."""

    open_end = OPEN_END
    close_sql = _CLOSE_SQL.format(held_join=_HELD_POSTGRES, join="JOIN")
    stored_keys_sql = _STORED_KEYS_SQL.format(stored=_STORED_POSTGRES)
    stored_sql = _STORED_SQL.format(ids="= ANY(%s)")
    update_sql = _UPDATE_SQL.format("%s")

    def _copy(self, table: str, columns: Sequence[str], types: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
        copy_rows(self.dbapi, table, columns, types, rows)

    def _fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Stored]:
        with self.dbapi.cursor() as cursor:
            return cursor.execute(sql, parameters).fetchall()

    def _stored(self, ids: list[int]) -> list[Stored]:
        return self._fetch(self.stored_sql, (ids,))

    def _insert(self, values: list[Values]) -> None:
        if values:
            self._copy("ip_assignment", _COLUMNS, _ROW_TYPES, values)

    def _update(self, changes: list[Values]) -> None:
        with self.dbapi.cursor() as cursor:
            cursor.executemany(self.update_sql, changes)

    def _fill_ranges(self, since: list[tuple[str, int, Any]]) -> None:
        empty_scratch_tables(self.session.connection(), "assignment_batch_range")
        self._copy("assignment_batch_range", ("range_start", "prefix_len", "since"),
                   ["text", "int4", "timestamptz"], since)

    @contextmanager
    def tuned(self) -> Iterator[None]:
        """The import lock (module docstring), plans per execution for the transaction
        (`db.plan_each_execution`), no JIT, and the temporary table."""
        self.session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _IMPORT_LOCK_KEY})
        plan_each_execution(self.session)
        # The batch statements are estimated costly (thousands of index probes) and are not: JIT
        # compiling them took longer (~0.9 s a batch) than running them.
        self.session.execute(sa.text("SET LOCAL jit = off"))
        self.session.execute(sa.text(_RANGE_DDL))
        yield


@contextmanager
def _writer(session: Session, source: str) -> Iterator[_Writer]:
    dialect = session.get_bind().dialect.name
    writer: _SqliteWriter | _PostgresWriter = (_SqliteWriter(session, source) if dialect == "sqlite"
                                               else _PostgresWriter(session, source))
    with writer.tuned():
        yield writer


# --- retention ------------------------------------------------------------------------------------


def purge_cutoff(*, now: datetime, retention_days: int, tz: str, before: str | None = None,
                 older_than_days: int | None = None) -> datetime:
    """The moment before which ended intervals go: `before` (a date or time, `tz` when it has no
    zone), else `older_than_days` (else `retention_days`) before `now`. InputError for both given, a
    bad date, or a cutoff in the future (it would delete what matching needs today)."""
    if before is not None and older_than_days is not None:
        raise InputError("give --before or --older-than-days, not both")
    if before is not None:
        try:
            cutoff = parse_timestamp(before, default_tz=tz)
        except ValueError as exc:
            raise InputError(f"--before: {exc}") from None
    else:
        days = retention_days if older_than_days is None else older_than_days
        if days < 1:
            raise InputError(f"--older-than-days must be at least 1, not {days}")
        cutoff = now - timedelta(days=days)
    if cutoff > now:
        raise InputError(f"--before {before} is in the future: that would delete intervals matching still needs")
    return cutoff


def purge_assignments(session: Session, *, before: datetime) -> dict[str, int]:
    """Delete IP assignments and NAT blocks that stopped covering before `before`, a batch at a
    time; returns how many of each. An interval still open (no end, no bound) is never deleted,
    whatever the cutoff."""
    return {
        "ip_assignment": _purge(session, IpAssignment.__table__, before,
                                sa.or_(IpAssignment.__table__.c.ended_at.is_not(None),
                                       IpAssignment.__table__.c.open_until.is_not(None))),
        "nat_block": _purge(session, NatBlock.__table__, before,
                            sa.or_(NatBlock.__table__.c.released_at.is_not(None),
                                   NatBlock.__table__.c.open_until.is_not(None))),
    }


def _purge(session: Session, table: sa.Table, before: datetime, ended: sa.ColumnElement[bool]) -> int:
    deleted = 0
    while True:
        doomed = sa.select(table.c.id).where(table.c.covers_until < before, ended).limit(PURGE_BATCH)
        count = session.execute(sa.delete(table).where(table.c.id.in_(doomed.scalar_subquery()))).rowcount
        deleted += count
        if count < PURGE_BATCH:
            return deleted
