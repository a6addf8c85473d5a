"""Ingest benchmark: import N subscribers, N sessions and an N-line sinkhole report, match it and
plan an SMS + e-mail campaign, on SQLite (default) or a given empty database. Prints figures.

    .venv/bin/python bench/ingest.py [--accounts 50000] [--database-url postgresql+psycopg://…]

Bounded: N is capped at 1,000,000; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

from notifier.db import upgrade
from notifier.demo_data import load_uniform_campaign

MAX_ACCOUNTS = 1_000_000


def _print_step(label: str, rows: int, seconds: float) -> None:
    print(f"{label:<22} {rows:>9} rows {seconds:7.2f} s {rows / seconds:9.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--database-url", help="an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    accounts = min(args.accounts, MAX_ACCOUNTS)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        load_uniform_campaign(url, Path(tmp) / "inputs", accounts=accounts, channels=["sms", "email"],
                              on_step=_print_step)
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
