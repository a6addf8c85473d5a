"""Rate-limit benchmark: N `notifier worker` processes share one SMS route's rate through Redis.

Default (the send path): one campaign of one-part SMS on a fresh PostgreSQL database, queued by
`campaign run` (production shape: Redis broker) and sent by `--workers` worker processes of
`--threads` threads each, exactly as `notifier worker` runs (`run_worker`: claim, pace message by
message, write, record, receipts) with `dispatch.sms_per_second` = the limit (the limiter paces
`dispatch.rate_margin` under it). The campaign holds enough rows for `--seconds` at the limit.
`--channel-only`: the same processes without a database — threads writing batches of one-part
SMS straight through the SMPP channel, each paced by the shared limiter (`Paced`) — to tell the
limiter's part from the send path's.

Prints, per limit: achieved parts/s (SMSC arrivals in the `--seconds` after the first), the worst
sliding 1-second window at the SMSC (its JSON-lines log, its clock), at our writes (the moment
each grant was handed to the write), and as granted (the slots Redis scheduled), how late writes
came after their slots (p99, max), how many slots were given up because their holder woke up
too late (ratelimit.LATE_SECONDS), and how many slots of the span no sender was waiting for (all
busy claiming or recording, or descheduled: the shortfall a loaded host causes) beside the rate the
schedule keeps while asked. Asserts nothing; tests/test_rate_limits.py runs it short.

    .venv/bin/python bench/ratelimit.py [--limits 50,200] [--seconds 60] [--workers 2] [--threads 4]
        [--channel-only] [--redis-url redis://127.0.0.1:6379/11]
        [--database-url postgresql+psycopg://… | --postgres-admin postgresql://postgres@127.0.0.1:5432/postgres]
        [--json]

Bounded: at most 120 s per limit, 8 workers; everything listens on 127.0.0.1; the Redis keys and
the database made for the run are deleted afterwards (a `--database-url` given is left as is).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch_db import POSTGRES_ADMIN, scratch_postgres  # noqa: E402

MAX_SECONDS, MAX_WORKERS = 120.0, 8
BATCH = 20  # --channel-only: messages per send_many, like a claimed batch
START_DELAY_SECONDS = 3.0  # --channel-only: workers bind to the SMSC, then all start at the same instant
EXTRA_ROWS = 1.05  # the campaign holds 5% more than --seconds at the limit, so the run outlasts the span


def worst_window(times: list[float], width: float = 1.0) -> int:
    """The most events in any half-open window [t, t + width) of the sorted `times`."""
    times = sorted(times)
    return max((bisect_left(times, start + width) - i for i, start in enumerate(times)), default=0)


# -- what a worker process notes: grants, writes, lateness ----------------------------------------

class GrantJournal:
    """Wraps a route's limiter and notes each slot granted (its scheduled time), the moment the
    grant was handed to the write (`acquire` returns just before `Paced` yields the message), and
    how late that was; written to a JSON file when the process ends."""

    def __init__(self) -> None:
        self.granted: list[float] = []
        self.written: list[float] = []
        self.late: list[float] = []
        self._last = threading.local()

    def on_grant(self, at: float, _parts: float) -> None:
        self.granted.append(at)
        self._last.at = at

    def wrap(self, limiter: Any) -> Any:
        journal = self

        class Journaled:
            def acquire(self, tokens: float = 1.0) -> float:
                waited = limiter.acquire(tokens)
                now = time.time()
                journal.written.append(now)
                journal.late.append(now - journal._last.at)
                return waited

            def throttled(self) -> None:
                limiter.throttled()

            def current_rate(self) -> float:
                return float(limiter.current_rate())

        return Journaled()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"granted": self.granted, "written": self.written, "late": self.late}))


def run_send_path_worker(args: argparse.Namespace) -> None:
    """`notifier worker` (run_worker, settings from the environment) with the SMS limiter journaled;
    until SIGTERM."""
    from notifier.dispatch import runtime
    from notifier.dispatch.loops import run_worker
    from notifier.settings import get_settings

    journal = GrantJournal()
    build = runtime.build_limiter
    runtime.build_limiter = lambda name, settings, **kw: journal.wrap(  # type: ignore[assignment]
        build(name, settings, on_grant=journal.on_grant, **kw))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run_worker(get_settings(), stop, channels=["sms"], threads=args.threads)
    finally:
        journal.save(args.grants)


def run_channel_worker(args: argparse.Namespace) -> None:
    """--channel-only: T threads sending batches of one-part SMS through the channel, paced per
    message (`Paced`) by the shared limiter, until the end."""
    from channels.base import OutgoingMessage, SendResult
    from channels.smpp import SmppChannel
    from notifier.dispatch.ratelimit import Paced
    from notifier.dispatch.runtime import build_limiter
    from notifier.settings import DispatchSettings, Settings, SmppSettings

    journal = GrantJournal()
    settings = Settings(broker_url=args.redis_url, broker_namespace=args.namespace,
                        dispatch=DispatchSettings(sms_per_second=args.limit))
    limiter = journal.wrap(build_limiter("sms", settings, on_grant=journal.on_grant))
    channel = SmppChannel(SmppSettings(port=args.smsc_port, system_id=f"bench-{os.getpid()}",
                                       registered_delivery=0, window=50))
    channel.start()
    end = args.start_at + args.seconds
    sent, errors = [0], [0]

    def loop(thread_no: int) -> None:
        number = 0
        while time.time() < end:
            batch = []
            for _ in range(BATCH):
                number += 1
                batch.append(OutgoingMessage(notification_id=number, destination=f"+849{os.getpid() % 1000:03d}"
                                             f"{thread_no:02d}{number % 1000:03d}", body="rate test"))
            outcomes = channel.send_many(Paced(limiter, batch, [1] * len(batch)))
            sent[0] += sum(isinstance(outcome, SendResult) for outcome in outcomes)
            errors[0] += sum(not isinstance(outcome, SendResult) for outcome in outcomes)

    time.sleep(max(0.0, args.start_at - time.time()))
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    journal.save(args.grants)
    print(json.dumps({"sent": sent[0], "errors": errors[0]}), flush=True)


# -- the measuring process -----------------------------------------------------------------------

def figures(limit: float, seconds: float, submits: list[float], grant_files: list[Path],
            span_start: float) -> dict[str, Any]:
    """The achieved rate over [span_start, span_start + seconds) and the worst windows."""
    logs = [json.loads(path.read_text()) for path in grant_files if path.exists()]
    granted = [at for log in logs for at in log["granted"]]
    written = [at for log in logs for at in log["written"]]
    late = sorted(seconds for log in logs for seconds in log["late"])
    in_span = [at for at in submits if span_start <= at < span_start + seconds]
    return {
        "limit": limit, "seconds": seconds,
        "achieved_per_second": round(len(in_span) / seconds, 2),
        "worst_window_smsc": worst_window(submits), "worst_window_written": worst_window(written),
        "worst_window_grants": worst_window(granted),
        "late_ms_p99": round(1000 * late[int(0.99 * (len(late) - 1))], 2) if late else None,
        "late_ms_max": round(1000 * late[-1], 2) if late else None,
        "slots_given_up": len(granted) - len(written), "submits": len(submits), "grants": len(granted),
        **_unasked(granted, span_start, seconds),
    }


def _unasked(granted: list[float], span_start: float, seconds: float) -> dict[str, Any]:
    """How much of the span the schedule could have granted but no sender was waiting for it (a
    gap longer than one slot between consecutive grants: every sending thread busy claiming or
    recording, or descheduled by the host), the longest such gap, and the rate the schedule keeps
    while asked (grants + unasked slots per second: the limiter's arithmetic alone, apart from
    how fast the senders come back to it). The slot is the median gap between grants."""
    times = sorted(at for at in granted if span_start <= at < span_start + seconds)
    gaps = [b - a for a, b in zip(times, times[1:])]
    slot = sorted(gaps)[len(gaps) // 2] if gaps else 0.0
    unasked = sum(max(0, round(gap / slot) - 1) for gap in gaps) if slot > 0 else 0
    return {"unasked_slots": unasked, "longest_gap_ms": round(1000 * max(gaps), 1) if gaps else None,
            "schedule_per_second": round((len(times) + unasked) / seconds, 2)}


def measure_channel_only(limit: float, *, seconds: float, workers: int, threads: int, redis_url: str,
                         directory: Path) -> dict[str, Any]:
    """--channel-only: `workers` processes against a fresh SMSC and Redis key."""
    import redis

    from notifier.peers.smsc import SmscPeer

    namespace = f"notifier-bench-{uuid.uuid4().hex[:8]}"
    start_at = time.time() + START_DELAY_SECONDS
    grant_files = [directory / f"grants-{limit:g}-{n}.json" for n in range(workers)]
    with SmscPeer(directory / f"smsc-{limit:g}.jsonl") as smsc:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "channel", "--smsc-port", str(smsc.port),
                   "--redis-url", redis_url, "--namespace", namespace, "--start-at", repr(start_at),
                   "--seconds", str(seconds), "--threads", str(threads), "--limits", f"{limit:g}"]
        children = [subprocess.Popen([*command, "--grants", str(path)], cwd=ROOT, stdout=subprocess.PIPE)
                    for path in grant_files]
        try:
            outputs = [json.loads(child.communicate(timeout=seconds + 60)[0] or b"{}") for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        submits = [_epoch(s["at"]) for s in smsc.submits() if s["message_id"]]
    redis.Redis.from_url(redis_url).delete(f"{namespace}:rate:sms")
    result = figures(limit, seconds, submits, grant_files, start_at)
    return {**result, "path": "channel", "workers": workers, "threads": threads,
            "errors": sum(int(o.get("errors", 0)) for o in outputs)}


def measure_send_path(limit: float, *, seconds: float, workers: int, threads: int, redis_url: str,
                      database_url: str, directory: Path) -> dict[str, Any]:
    """A campaign of one-part SMS through `workers` `notifier worker` processes and the loopback
    SMSC (receipts on), queued and followed by `campaign run`."""
    import redis

    from dispatch import _templates  # bench/dispatch.py: the shipped templates with a one-part SMS
    from notifier.db import dispose_engines, upgrade
    from notifier.demo_data import load_uniform_campaign
    from notifier.dispatch.loops import run_campaign
    from notifier.peers.smsc import SmscPeer
    from notifier.settings import DispatchSettings, Settings, SmppSettings

    upgrade(database_url)
    accounts = math.ceil(limit * seconds * EXTRA_ROWS) + 10
    campaign_id = load_uniform_campaign(database_url, directory / f"inputs-{limit:g}", accounts=accounts,
                                        channels=["sms"])
    namespace = f"notifier-bench-{uuid.uuid4().hex[:8]}"
    grant_files = [directory / f"grants-{limit:g}-{n}.json" for n in range(workers)]
    client = redis.Redis.from_url(redis_url)
    with SmscPeer(directory / f"smsc-{limit:g}.jsonl") as smsc:
        settings = Settings(database_url=database_url, broker_url=redis_url, broker_namespace=namespace,
                            templates_dir=_templates(directory, "one-part"),
                            smpp=SmppSettings(port=smsc.port, system_id="bench-rate", window=50),
                            dispatch=DispatchSettings(worker_threads=threads, sms_per_second=limit,
                                                      receipt_wait_seconds=30))
        env = {**os.environ, "NOTIFIER_DATABASE_URL": database_url, "NOTIFIER_BROKER_URL": redis_url,
               "NOTIFIER_BROKER_NAMESPACE": namespace, "NOTIFIER_TEMPLATES_DIR": str(settings.templates_dir),
               "NOTIFIER_SMPP__PORT": str(smsc.port), "NOTIFIER_SMPP__SYSTEM_ID": "bench-rate",
               "NOTIFIER_SMPP__WINDOW": "50", "NOTIFIER_DISPATCH__SMS_PER_SECOND": repr(limit),
               "NOTIFIER_DISPATCH__WORKER_THREADS": str(threads)}
        children = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "send-path",
                                      "--threads", str(threads), "--grants", str(path)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for path in grant_files]
        try:
            _wait_for_heartbeats(client, namespace, workers)
            status = run_campaign(settings, campaign_id)
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            dispose_engines()
        submits = [_epoch(s["at"]) for s in smsc.submits() if s["message_id"]]
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)
    result = figures(limit, seconds, submits, grant_files, min(submits, default=0.0))
    return {**result, "path": "send", "workers": workers, "threads": threads, "rows": accounts,
            "errors": sum(count for state, count in _by_state(status).items() if state != "delivered")}


def _by_state(status: dict[str, Any]) -> dict[str, int]:
    """Rows per state over the campaign's channels (`campaign run`'s summary)."""
    totals: dict[str, int] = {}
    for counts in status.get("by_channel", {}).values():
        for state, count in counts.items():
            totals[state] = totals.get(state, 0) + int(count)
    return totals


def _wait_for_heartbeats(client: Any, namespace: str, count: int, timeout: float = 60.0) -> None:
    """Until `count` workers consume from the broker (dramatiq registers a heartbeat each)."""
    deadline = time.monotonic() + timeout
    while client.zcard(f"{namespace}:__heartbeats__") < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {count} workers did not start within {timeout:g}s")
        time.sleep(0.1)


@contextmanager
def database(given: str | None, admin_url: str) -> Iterator[str]:
    """The database to load the campaign into: the one given, or a fresh PostgreSQL one, dropped after."""
    if given:
        yield given
        return
    with scratch_postgres(admin_url, prefix="notifier_bench_rate") as url:
        yield url


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="50,200", help="parts/s limits to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="sending threads per worker")
    parser.add_argument("--channel-only", action="store_true", help="no database: the limiter and the channel")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--database-url", help="a PostgreSQL database to load the campaign into (one limit)")
    parser.add_argument("--postgres-admin", default=POSTGRES_ADMIN, help="where to make a database for the run")
    parser.add_argument("--json", action="store_true", help="print one JSON list of results")
    parser.add_argument("--worker", choices=["send-path", "channel"], help=argparse.SUPPRESS)
    parser.add_argument("--smsc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--grants", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = min(args.seconds, MAX_SECONDS)
    if args.worker == "send-path":
        run_send_path_worker(args)
        return
    if args.worker == "channel":
        args.limit = float(args.limits)
        run_channel_worker(args)
        return
    limits = [float(text) for text in args.limits.split(",")]
    if args.database_url and len(limits) > 1:
        parser.error("--database-url takes one limit (each limit loads its own campaign)")
    workers = min(args.workers, MAX_WORKERS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for limit in limits:
            directory = Path(tmp) / f"limit-{limit:g}"
            directory.mkdir()
            if args.channel_only:
                result = measure_channel_only(limit, seconds=args.seconds, workers=workers, threads=args.threads,
                                              redis_url=args.redis_url, directory=directory)
            else:
                with database(args.database_url, args.postgres_admin) as url:
                    result = measure_send_path(limit, seconds=args.seconds, workers=workers, threads=args.threads,
                                               redis_url=args.redis_url, database_url=url, directory=directory)
            results.append(result)
            if not args.json:
                print(_line(result), flush=True)
    if args.json:
        print(json.dumps(results))


def _line(result: dict[str, Any]) -> str:
    limit = float(result["limit"])
    return (f"limit {limit:g} parts/s, {result['path']} path, {result['workers']} workers × {result['threads']} threads, "
            f"{result['seconds']:g} s: achieved {result['achieved_per_second']}/s "
            f"({100 * float(result['achieved_per_second']) / limit:.1f}%); worst 1-s window: "
            f"{result['worst_window_smsc']} at the SMSC, {result['worst_window_written']} written, "
            f"{result['worst_window_grants']} granted; write after its slot p99 {result['late_ms_p99']} ms, "
            f"max {result['late_ms_max']} ms; {result['slots_given_up']} slot(s) given up; the schedule "
            f"{result['schedule_per_second']}/s while asked, {result['unasked_slots']} slot(s) no sender was "
            f"waiting for (longest gap {result['longest_gap_ms']} ms); "
            f"{result['errors']} error(s)")


if __name__ == "__main__":
    main()
