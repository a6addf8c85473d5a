"""Dispatch benchmark: one embedded campaign (SQLite, in-process worker) of N accounts × SMS + e-mail
through the loopback SMPP and SMTP peers, with receipts. Prints figures; asserts nothing.

    .venv/bin/python bench/dispatch.py [--accounts 1000] [--threads 4]

Bounded: N is capped at 20,000 and everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from notifier.db import upgrade
from notifier.demo_data import load_uniform_campaign
from notifier.dispatch.loops import run_campaign
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.settings import DispatchSettings, Settings, SmppSettings, SmtpSettings

MAX_ACCOUNTS = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--channels", default="sms,email", help="the campaign's channel chain")
    parser.add_argument("--database-url", help="an empty database to use (default: a temporary SQLite file)")
    args = parser.parse_args()
    accounts = min(args.accounts, MAX_ACCOUNTS)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        url = args.database_url or f"sqlite:///{directory / 'bench.db'}"
        upgrade(url)
        started = time.perf_counter()
        campaign_id = load_uniform_campaign(url, directory / "inputs", accounts=accounts,
                                            channels=args.channels.split(","))
        prepared = time.perf_counter()
        with SmscPeer(directory / "smsc.jsonl") as smsc, SmtpSink() as smtp:
            settings = Settings(
                database_url=url, smpp=SmppSettings(port=smsc.port, system_id="bench"),
                smtp=SmtpSettings(port=smtp.port),
                dispatch=DispatchSettings(worker_threads=args.threads, sms_per_second=100_000,
                                          email_per_second=100_000, receipt_wait_seconds=30))
            status = run_campaign(settings, campaign_id)
            finished = time.perf_counter()
            submits = len(smsc.submits())
        states = collections.Counter({f"{ch}:{st}": n for ch, c in status["by_channel"].items() for st, n in c.items()})
        notifications = len(args.channels.split(",")) * accounts
        print(f"accounts={accounts} threads={args.threads}")
        print(f"import+match+plan: {prepared - started:.2f}s ({accounts / (prepared - started):.0f} accounts/s)")
        print(f"send+receipts:     {finished - prepared:.2f}s ({notifications / (finished - prepared):.0f} notifications/s, "
              f"{submits} SMS parts)")
        print(f"outcome:           {dict(states)}")


if __name__ == "__main__":
    main()
