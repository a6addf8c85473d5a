"""Matching benchmark (issue 7): who held an address at a time, at an operator's volumes.

    .venv/bin/python bench/matching.py [--quick] [--assignments N] [--events M] [--feed-rows K]
        [--backend sqlite|postgresql] [--database-url URL] [--load import|direct] [--skip-feed]
        [--next-days D]

Generates its data under a temporary directory, then measures, in one run:
  (a) importing N session records (a generated `sessions-csv` file) through `import_assignments`,
      records/s (`--load direct` bulk-loads them instead, in address order through the driver's
      COPY / executemany, and skips this figure: 10 million intervals in minutes, for iterations);
      with `--next-days D`, (a2) then imports the next D days of the same addresses into the table
      (a) filled, as an operator's daily files land in a table holding months (off by default: it
      adds intervals, so (b)–(d) would not compare with runs without it);
  (b) streaming a K-row Shadowserver `event4_sinkhole` file through `import_feed`, rows/s and
      peak RSS: parsing, deciding each batch's outcomes and storing every row once with its
      outcome (`ItemResolver`), so this is the whole cost of a feed from a file;
  (c) matching M events against the N intervals: each batch of 20,000 decided by
      `ItemResolver.outcomes`, exactly as `import_feed` decides every batch of a file before storing
      it; only those calls are timed (the events are generated in between). events/s and CPU µs per
      event (this process; for PostgreSQL also the server backends');
  (c2) the same M events stored pending beforehand (untimed) and matched by `match_feed`, which
      writes each outcome by an UPDATE of the stored row: how a stored feed is matched again (`feed match`);
  (d) the same events matched "the way an operator would write it": one indexed SQL query per
      event, on a sample (20,000 events), extrapolated; events/s and the ratios (c)/(d) and
      (c2)/(d). Like (c), the baseline decides and writes nothing.
It checks that (c), (c2) and (d) agree on the sample, and prints peak RSS (`resource.getrusage`).

Data: N/100 public IPv4 addresses, each handed from account to account once a day (100 sessions
each, 10 % of them ending an hour early, the last one still open), times in Asia/Ho_Chi_Minh like an
operator's log. Events fall in the last ten days (a feed reports recent sightings while history is
kept 180 days); 2 % of them land seconds from a hand-over (ambiguous) and 10 % on addresses nobody
held (unmatched). Defaults are the issue's sizes (N = 10,000,000, M = K = 1,000,000); `--quick` is
N = 200,000, M = K = 50,000. PostgreSQL: `--backend postgresql` creates a database on
127.0.0.1:5432 (`--postgres-admin`) and drops it afterwards; `--database-url` uses an empty one.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from notifier.batching import chunks  # noqa: E402
from notifier.db import dispose_engines, get_engine, session_scope, upgrade  # noqa: E402
from notifier.identifiers import ip_key  # noqa: E402
from notifier.identity.matching import ItemResolver, match_feed  # noqa: E402
from notifier.importing import STORE_BATCH_ROWS, import_assignments, import_feed  # noqa: E402
from notifier.models import OPEN_END, Account, Feed, FeedItem, IpAssignment  # noqa: E402
from scratch_db import POSTGRES_ADMIN, scratch_postgres  # noqa: E402

LOCAL = timedelta(hours=7)  # Asia/Ho_Chi_Minh, no daylight saving
DAY = 86_400
SESSIONS_PER_ADDRESS = 100
ACCOUNTS_PER_ADDRESS = 5  # accounts = addresses × 5: each account holds an address 20 days of 100
RECENT_DAYS = 10
SKEW_SECONDS = 60
BASELINE_SAMPLE = 20_000
INSERT_CHUNK = 20_000
FIRST_DAY = datetime(2026, 8, 1, tzinfo=UTC)
POOL_BASE = int.from_bytes(bytes([14, 160, 0, 0]), "big")
OUTSIDE_BASE = int.from_bytes(bytes([27, 64, 0, 0]), "big")  # addresses nobody held
MAX_ASSIGNMENTS = 20_000_000
MAX_EVENTS = 2_000_000
OUTCOMES = ("matched", "unmatched", "ambiguous")
QUICK = {"assignments": 200_000, "events": 50_000, "feed_rows": 50_000}


@dataclass(frozen=True)
class Layout:
    """The generated world: addresses, their daily hand-overs, and who held what."""

    addresses: int
    sessions: int  # per address
    accounts: int
    seed: int = 7

    def ip(self, index: int) -> str:
        value = POOL_BASE + index
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"

    def phase(self, index: int) -> int:
        """Seconds after midnight at which this address changes hands (spreads hand-overs)."""
        return index * 7919 % DAY

    def start(self, index: int, day: int) -> datetime:
        return FIRST_DAY + timedelta(days=day, seconds=self.phase(index))

    def account(self, index: int, day: int) -> int:
        """Account number (0-based) holding address `index` on `day`: deterministic, scattered."""
        return (index * ACCOUNTS_PER_ADDRESS + (day * 2654435761 + index) % ACCOUNTS_PER_ADDRESS) % self.accounts

    def end(self, index: int, day: int) -> datetime | None:
        if day == self.sessions - 1:
            return None  # still open
        early = (index + day * 31) % 10 == 0
        return self.start(index, day + 1) - timedelta(hours=1 if early else 0)


def layout_for(assignments: int) -> Layout:
    addresses = max(1, assignments // SESSIONS_PER_ADDRESS)
    return Layout(addresses=addresses, sessions=SESSIONS_PER_ADDRESS, accounts=addresses * ACCOUNTS_PER_ADDRESS)


def account_ref(number: int) -> str:
    return f"B{number:08d}"


def local_text(moment: datetime) -> str:
    return (moment + LOCAL).strftime("%Y-%m-%d %H:%M:%S")


# --- generation -------------------------------------------------------------------------------


def insert_accounts(url: str, layout: Layout) -> None:
    """Accounts by direct bulk insert: the subscriber import is measured elsewhere (bench/ingest)."""
    now = datetime.now(UTC)
    with session_scope(url) as session:
        for first in range(0, layout.accounts, INSERT_CHUNK):
            session.execute(sa.insert(Account), [
                {"account_ref": account_ref(n), "full_name": f"Khách hàng {n}", "language": "vi", "status": "active",
                 "sms_opt_out": False, "email_opt_out": False, "voice_opt_out": False, "created_at": now,
                 "updated_at": now} for n in range(first, min(first + INSERT_CHUNK, layout.accounts))])


def sessions_rows(layout: Layout, days: range) -> Iterator[tuple[int, int]]:
    """(address, day) in log order: a day's sessions of every address, then the next day's."""
    for day in days:
        for index in range(layout.addresses):
            yield index, day


def write_sessions_csv(path: Path, layout: Layout, days: range | None = None) -> int:
    """The sessions of `days` (default: all of the layout's) as a `sessions-csv` file; the layout's
    last day stays open."""
    rows = 0
    with path.open("w", encoding="utf-8") as handle:
        handle.write("account_id,ip,start,end\n")
        for index, day in sessions_rows(layout, range(layout.sessions) if days is None else days):
            end = layout.end(index, day)
            handle.write(f"{account_ref(layout.account(index, day))},{layout.ip(index)},"
                         f"{local_text(layout.start(index, day))},{'' if end is None else local_text(end)}\n")
            rows += 1
    return rows


def insert_sessions_directly(url: str, layout: Layout) -> int:
    """The same intervals as the CSV, bulk-loaded through the driver's fastest path (SQLite
    `executemany` of plain tuples, PostgreSQL `COPY`) in address order, so that both indexes (led
    by the address) grow at their end: generating 10 million rows takes minutes, not the hour that
    per-row parameter processing and scattered index inserts would. The import itself is (a)."""
    with session_scope(url) as session:
        ids = dict(session.execute(sa.select(Account.account_ref, Account.id)).all())
    engine = get_engine(url)
    postgres = engine.dialect.name == "postgresql"
    stamp = (lambda moment: moment) if postgres else (
        lambda moment: moment.replace(tzinfo=None).isoformat(" ", "microseconds"))
    open_end = stamp(OPEN_END)
    names = "account_id, network, range_start, range_end, prefix_len, started_at, ended_at, covers_until, source"
    rows = 0
    chunk: list[tuple[object, ...]] = []
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        for index in range(layout.addresses):  # address-major: the indexes, led by the address, fill in order
            ip = layout.ip(index)
            key = ip_key(ip)
            for day in range(layout.sessions):
                end = layout.end(index, day)
                ended = None if end is None else stamp(end)
                chunk.append((ids[account_ref(layout.account(index, day))], ip, key, key, 128,
                              stamp(layout.start(index, day)), ended, ended or open_end, "sessions-csv"))
                if len(chunk) >= INSERT_CHUNK * 5:
                    rows += _load_rows(raw, postgres, "ip_assignment", names, chunk)
        rows += _load_rows(raw, postgres, "ip_assignment", names, chunk)
    return rows


def _load_rows(raw: object, postgres: bool, table: str, names: str, chunk: list[tuple[object, ...]]) -> int:
    if postgres:
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in chunk:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in names.split(","))
        raw.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", chunk)  # type: ignore[attr-defined]
    count = len(chunk)
    chunk.clear()
    return count


def events(layout: Layout, count: int, seed: int) -> Iterator[tuple[str, datetime, int]]:
    """(ip, seen_at UTC, source port): recent sightings, some at hand-overs, some outside the pool."""
    rng = random.Random(seed)
    recent = min(RECENT_DAYS, layout.sessions)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.10:
            ip_value = OUTSIDE_BASE + rng.randrange(1 << 20)
            ip = f"{ip_value >> 24}.{ip_value >> 16 & 255}.{ip_value >> 8 & 255}.{ip_value & 255}"
            seen = layout.start(0, layout.sessions - 1 - rng.randrange(recent)) + timedelta(seconds=rng.randrange(DAY))
        else:
            index = rng.randrange(layout.addresses)
            day = layout.sessions - 1 - rng.randrange(recent)
            offset = rng.randrange(-20, 20) if roll < 0.12 and day > 0 else rng.randrange(DAY)
            ip, seen = layout.ip(index), layout.start(index, day) + timedelta(seconds=offset)
        yield ip, seen, rng.randrange(1024, 65536)


def write_sinkhole_csv(path: Path, layout: Layout, rows: int) -> None:
    header = ("timestamp,src_ip,src_port,dst_ip,dst_port,protocol,asn,geo,region,city,hostname,infection,"
              "family,tag,application\n")
    with path.open("w", encoding="utf-8") as handle:
        handle.write(header)
        for ip, seen, port in events(layout, rows, seed=11):
            handle.write(f"{seen:%Y-%m-%d %H:%M:%S},{ip},{port},198.51.100.7,80,tcp,45899,VN,HA NOI,HANOI,,"
                         f"sinkhole,mirai,,http\n")


def insert_pending_feed(url: str, layout: Layout, count: int) -> int:
    """A feed of `count` pending IP events stored directly (driver's bulk path), for the match-only
    measurement: its rows are what `import_feed` would have stored."""
    with session_scope(url) as session:
        feed = Feed(format="shadowserver", report_type="event4_sinkhole", filename="bench-match.csv",
                    file_sha256=uuid.uuid4().hex * 2)
        session.add(feed)
        session.flush()
        feed_id = feed.id
    assert feed_id is not None
    engine = get_engine(url)
    postgres = engine.dialect.name == "postgresql"
    names = "feed_id, line, status, kind, identifier_kind, identifier, port, seen_at, threat"
    chunk: list[tuple[object, ...]] = []
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        for line, (ip, seen, port) in enumerate(events(layout, count, seed=13), start=2):
            moment: object = seen if postgres else seen.replace(tzinfo=None).isoformat(" ", "microseconds")
            chunk.append((feed_id, line, "pending", "infected_device", "ip", ip, port, moment, "mirai"))
            if len(chunk) >= INSERT_CHUNK * 5:
                _load_rows(raw, postgres, "feed_item", names, chunk)
        _load_rows(raw, postgres, "feed_item", names, chunk)
    return feed_id


# --- measurements -----------------------------------------------------------------------------


class Clock:
    """Wall and CPU time of this process (and, on PostgreSQL, of the server backends) for a step.

    Entered once for a step, or once per batch of a step whose untimed work (generating its input)
    happens in between: the times add up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.wall = self.cpu = 0.0
        self.server: float | None = None

    def __enter__(self) -> Clock:
        self.server_before = server_cpu(self.url)
        self.cpu_before = time.process_time()
        self.wall_before = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall += time.perf_counter() - self.wall_before
        self.cpu += time.process_time() - self.cpu_before
        after = server_cpu(self.url)
        if after is not None and self.server_before is not None:
            self.server = (self.server or 0.0) + after - self.server_before

    def line(self, label: str, units: int, unit: str) -> str:
        server = "" if self.server is None else f", server CPU {self.server / units * 1e6:6.1f} µs/{unit}"
        return (f"{label:<34} {units:>10,} {unit}s {self.wall:8.2f} s  {units / self.wall:>10,.0f} {unit}s/s"
                f"  (our CPU {self.cpu / units * 1e6:6.1f} µs/{unit}{server})")


def server_cpu(url: str) -> float | None:
    """CPU seconds of the PostgreSQL backends serving our database (from /proc), None on SQLite."""
    if not url.startswith("postgresql"):
        return None
    name = sa.make_url(url).database
    with get_engine(url).connect() as connection:
        pids = connection.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                                  {"name": name}).scalars().all()
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(url: str, feed_id: int, sample: int) -> tuple[Clock, dict[int, tuple[str, int | None]]]:
    """One indexed query per event, as a hand-written lookup would do it (same skew rule)."""
    query = sa.text(
        "SELECT DISTINCT account_id FROM ip_assignment WHERE range_start = :key "
        "AND covers_until > :seen_lo AND started_at <= :seen_hi"
    ).bindparams(sa.bindparam("seen_lo", type_=IpAssignment.__table__.c.started_at.type),
                 sa.bindparam("seen_hi", type_=IpAssignment.__table__.c.started_at.type))
    with session_scope(url) as session:
        items = session.execute(sa.select(FeedItem.line, FeedItem.identifier, FeedItem.seen_at)
                                .where(FeedItem.feed_id == feed_id).order_by(FeedItem.id).limit(sample)).all()
        skew = timedelta(seconds=SKEW_SECONDS)
        found: dict[int, tuple[str, int | None]] = {}
        with Clock(url) as clock:
            for item in items:
                accounts = session.execute(query, {"key": ip_key(item.identifier), "seen_lo": item.seen_at - skew,
                                                   "seen_hi": item.seen_at + skew}).scalars().all()
                status = "matched" if len(accounts) == 1 else "ambiguous" if accounts else "unmatched"
                found[item.line] = (status, accounts[0] if len(accounts) == 1 else None)
    return clock, found


def settle(url: str) -> None:
    """PostgreSQL: what autovacuum does soon after a bulk load (untimed). Without it the tables have
    no statistics and no visibility map, so every index-only probe of the 10 million intervals also
    fetches heap pages: measured 122 instead of ~35 µs of server CPU per event, a state a loaded
    database leaves within minutes. SQLite needs nothing (its plans do not depend on statistics)."""
    if not url.startswith("postgresql"):
        return
    started = time.perf_counter()
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM (ANALYZE) ip_assignment"))
        connection.execute(sa.text("VACUUM (ANALYZE) feed_item"))
    print(f"    VACUUM (ANALYZE) after the load: {time.perf_counter() - started:.1f} s (untimed)", flush=True)


def stored_outcomes(url: str, feed_id: int, lines: list[int]) -> dict[int, tuple[str, int | None]]:
    """line → (status, account) of a matched feed's items on these lines."""
    with session_scope(url) as session:
        rows = session.execute(sa.select(FeedItem.line, FeedItem.status, FeedItem.account_id)
                               .where(FeedItem.feed_id == feed_id, FeedItem.line.in_(lines))).all()
    return {row.line: (row.status, row.account_id) for row in rows}


def decide_events(url: str, layout: Layout, count: int, sample: int
                  ) -> tuple[Clock, Counter[str], dict[int, tuple[str, int | None]]]:
    """(c): the outcome of `count` events, decided a batch at a time by `ItemResolver.outcomes`
    exactly as `import_feed` decides each batch of a file before storing it; only those calls are
    timed (the events are generated in between, the same ones `insert_pending_feed` stores, one
    per line from 2). Returns the clock, the totals and the outcomes of the first `sample` lines."""
    clock = Clock(url)
    totals: Counter[str] = Counter()
    first: dict[int, tuple[str, int | None]] = {}
    line = 2
    with session_scope(url) as session, ItemResolver(session, skew_seconds=SKEW_SECONDS) as resolver:
        for chunk in chunks(events(layout, count, seed=13), STORE_BATCH_ROWS):
            rows = [(line + offset, "ip", ip, port, resolver.own_time(seen))
                    for offset, (ip, seen, port) in enumerate(chunk)]
            line += len(chunk)
            with clock:
                outcomes = resolver.outcomes(rows)
            totals.update(status for status, _, _ in outcomes.values())
            first.update((ref, (status, account_id)) for ref, (status, account_id, _) in outcomes.items()
                         if ref < sample + 2)
    return clock, totals, first


# --- the run ----------------------------------------------------------------------------------


def run(url: str, directory: Path, args: argparse.Namespace) -> None:
    layout = layout_for(args.assignments)
    backend = sa.make_url(url).get_backend_name()
    print(f"backend={backend} assignments={layout.addresses * layout.sessions:,} addresses={layout.addresses:,} "
          f"accounts={layout.accounts:,} events={args.events:,} feed_rows={args.feed_rows:,} skew={SKEW_SECONDS}s")
    upgrade(url)
    insert_accounts(url, layout)
    if args.load == "import":
        sessions = directory / "sessions.csv"
        rows = write_sessions_csv(sessions, layout)
        with Clock(url) as clock, session_scope(url) as session:
            result = import_assignments(session, sessions, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
        assert result.rejected == 0, result.errors[:3]
        print(clock.line("(a) import_assignments", rows, "record"), f"peak RSS {peak_rss_mib():.0f} MiB", flush=True)
        sessions.unlink()
        if args.next_days:
            import_next_days(url, directory, layout, args.next_days)
    else:
        started = time.perf_counter()
        rows = insert_sessions_directly(url, layout)
        print(f"(a) skipped: {rows:,} intervals bulk-inserted in {time.perf_counter() - started:.1f} s", flush=True)
    os.environ["NOTIFIER_IDENTITY__CLOCK_SKEW_SECONDS"] = str(SKEW_SECONDS)
    if not args.skip_feed:
        feed_file = directory / "2026-11-20-event4_sinkhole-vietnam-geo.csv"
        write_sinkhole_csv(feed_file, layout, args.feed_rows)
        settle(url)  # (b) and (c) probe the intervals in the same state (see `settle`)
        with Clock(url) as clock, session_scope(url) as session:
            result = import_feed(session, feed_file, fmt="shadowserver")
        counts = result.counts or {}
        print(clock.line("(b) import_feed (match on store)", args.feed_rows, "row"),
              f"peak RSS {peak_rss_mib():.0f} MiB; {counts}", flush=True)
    sample = min(BASELINE_SAMPLE, args.events)
    settle(url)
    decide_clock, totals, decided = decide_events(url, layout, args.events, sample)
    print(decide_clock.line("(c) match (decide, as imports do)", args.events, "event"),
          f"peak RSS {peak_rss_mib():.0f} MiB; " + " ".join(f"{status} {totals[status]:,}" for status in OUTCOMES),
          flush=True)
    feed_id = insert_pending_feed(url, layout, args.events)
    settle(url)
    with Clock(url) as clock, session_scope(url) as session:
        counts = match_feed(session, feed_id, skew_seconds=SKEW_SECONDS)
    print(clock.line("(c2) match_feed (stored, UPDATE)", args.events, "event"),
          f"peak RSS {peak_rss_mib():.0f} MiB; "
          f"matched {counts.matched:,} unmatched {counts.unmatched:,} ambiguous {counts.ambiguous:,}", flush=True)
    base_clock, base_outcomes = baseline(url, feed_id, sample)
    print(base_clock.line("(d) one query per event (sample)", sample, "event"), flush=True)
    agree = base_outcomes == decided == stored_outcomes(url, feed_id, list(base_outcomes))
    per_query = sample / base_clock.wall
    print(f"speed ratio (c)/(d): {(args.events / decide_clock.wall) / per_query:.1f}x wall, "
          f"{(base_clock.cpu / sample) / (decide_clock.cpu / args.events):.1f}x our CPU; "
          f"(c2)/(d): {(args.events / clock.wall) / per_query:.1f}x wall; "
          f"(c), (c2) and (d) agree on the sample: {'yes' if agree else 'NO'}")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


def import_next_days(url: str, directory: Path, layout: Layout, days: int) -> None:
    """(a2): the `days` days after the layout's, for every address, into the filled table: each
    row lands at the end of its address's history in the indexes, and the interval (a) left open
    on each address is closed by the first new one."""
    later = replace(layout, sessions=layout.sessions + days)
    path = directory / "sessions-next.csv"
    rows = write_sessions_csv(path, later, range(layout.sessions, later.sessions))
    with Clock(url) as clock, session_scope(url) as session:
        result = import_assignments(session, path, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
    assert result.rejected == 0, result.errors[:3]
    print(clock.line(f"(a2) next {days} days, filled table", rows, "record"), flush=True)
    path.unlink()


@contextmanager
def database(args: argparse.Namespace, directory: Path) -> Iterator[str]:
    """The database to measure: given, a temporary SQLite file, or a PostgreSQL one made and dropped."""
    if args.database_url:
        yield args.database_url
    elif args.backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        dispose_engines()
    else:
        with scratch_postgres(args.postgres_admin) as url:
            yield url


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignments", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--feed-rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="small sizes: " + str(QUICK))
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-admin", default=POSTGRES_ADMIN)
    parser.add_argument("--database-url", help="an empty database to use instead (it is left as is)")
    parser.add_argument("--load", choices=["import", "direct"], default="import",
                        help="import: time import_assignments on a generated file; direct: bulk insert, untimed")
    parser.add_argument("--skip-feed", action="store_true", help="skip (b), the feed file import")
    parser.add_argument("--next-days", type=int, default=0,
                        help="(a2): import the next D days into the filled table (import mode only)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(**QUICK)  # sizes given explicitly still win
    args = parser.parse_args()
    args.assignments = min(args.assignments, MAX_ASSIGNMENTS)
    args.events, args.feed_rows = min(args.events, MAX_EVENTS), min(args.feed_rows, MAX_EVENTS)
    return args


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory(prefix="bench-matching-") as tmp, database(args, Path(tmp)) as url:
        run(url, Path(tmp), args)


if __name__ == "__main__":
    main()
