"""Ingest benchmark: import N subscribers, N sessions and an N-line sinkhole report, match it and
plan an SMS + e-mail campaign, on SQLite (default) or a given empty database. Prints figures.

    .venv/bin/python bench/ingest.py [--accounts 50000] [--database-url postgresql+psycopg://…]

Bounded: N is capped at 1,000,000; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from notifier.campaigns import create_campaign
from notifier.db import session_scope, upgrade
from notifier.demo_data import write_uniform_inputs
from notifier.importing import import_assignments, import_feed, import_subscribers

MAX_ACCOUNTS = 1_000_000


def _timed(label: str, rows: int, url: str, step: Callable[[Session], object]) -> object:
    started = time.perf_counter()
    with session_scope(url) as session:
        result = step(session)
    elapsed = time.perf_counter() - started
    print(f"{label:<22} {rows:>9} rows {elapsed:7.2f} s {rows / elapsed:9.0f} rows/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--database-url", help="an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    n = min(args.accounts, MAX_ACCOUNTS)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        url = args.database_url or f"sqlite:///{directory / 'bench.db'}"
        upgrade(url)
        files = write_uniform_inputs(directory / "inputs", accounts=n)
        tz = "Asia/Ho_Chi_Minh"
        _timed("subscribers import", n, url, lambda s: import_subscribers(s, files.subscribers, tz=tz))
        _timed("subscribers re-import", n, url, lambda s: import_subscribers(s, files.subscribers, tz=tz))
        _timed("sessions import", n, url, lambda s: import_assignments(s, files.sessions, fmt="sessions-csv", tz=tz))
        feed = _timed("feed import + match", n, url, lambda s: import_feed(s, files.shadowserver, fmt="shadowserver"))
        _timed("campaign plan (2 ch.)", n, url, lambda s: create_campaign(
            s, feed_id=feed.id, template="infected_device", channels=["sms", "email"]))  # type: ignore[attr-defined]
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
