"""Dispatch benchmark: one campaign of N accounts through the loopback SMSC (and SMTP) peers, every
receipt applied before the clock stops, next to the bare SMPP channel's rate in the same run.

    .venv/bin/python bench/dispatch.py [--accounts 1000] [--threads 4] [--channels sms|email|sms,email]
        [--text one-part|ucs2|template] [--workers 0|2 [--database-url postgresql+psycopg://…] --broker-url redis://…]
        [--first-submit]

`--workers 0` (default): embedded (the in-process broker and worker threads inside `campaign run`).
`--workers N`: N `notifier worker` processes on the Redis broker; `campaign run` only queues and
follows; the database is a fresh PostgreSQL one (`--postgres-admin`), dropped after, unless
`--database-url` names one. The bare SMPP channel (no database, as many messages as the campaign up
to 10,000, on the same SMSC peer) is measured in the same run: with a delivery receipt per part as
the campaign asks for (the same protocol work on both sides of the socket) just before the campaign
and again just after it, and submits only; the end-to-end parts/s is given as a share of the mean
of the first two (a drift of the host's speed during the run then weighs on both sides) and of the
third; with the CPU per message of the bare channel itself and of the SMSC peer during the first
two (the share is about (peer + bare channel) / (peer + ours) when the run is CPU-bound). Prints
notifications/s, parts/s, the timeline (first and last submit, end), CPU ms per notification for
our processes (this one + the workers, from the clock's start; embedded, also by thread: dramatiq's
`WorkerThread`s send, `smpp-reader` reads the SMSC's answers and receipts, `smpp-receipt-writer`
stores receipts, `receipt-applier` applies the ones that beat their send's record, `MainThread`
queues and follows the campaign) and for PostgreSQL (only the backends of our database: pids
sampled from pg_stat_activity during the run, /proc/<pid>/stat), SQL statements (SQLAlchemy `before_cursor_execute`, an executemany counts once;
workers write theirs at exit, `NOTIFIER_SQL_COUNTS_FILE`) and transactions (commits; PostgreSQL:
pg_stat_database of the database) per notification.
`--first-submit`: only the time from `campaign run` to the SMSC's first submit (then the campaign
is cancelled); up to 100,000 accounts. Asserts nothing. Bounded: N ≤ 20,000 (100,000 with
`--first-submit`), everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from channels.base import OutgoingMessage  # noqa: E402
from channels.smpp import SmppChannel  # noqa: E402
from notifier.campaigns import cancel_campaign  # noqa: E402
from notifier.db import SQL_COUNTS_ENV, get_engine, session_scope, upgrade  # noqa: E402
from notifier.demo_data import load_uniform_campaign  # noqa: E402
from notifier.dispatch.loops import run_campaign  # noqa: E402
from notifier.peers.smsc import SmscPeer  # noqa: E402
from notifier.peers.smtp_sink import SMTP_SINK_THREAD, SmtpSink  # noqa: E402
from notifier.settings import DispatchSettings, Settings, SmppSettings, SmtpSettings, TEMPLATES_DIR  # noqa: E402
from scratch_db import POSTGRES_ADMIN, scratch_postgres  # noqa: E402

MAX_ACCOUNTS = 20_000
MAX_ACCOUNTS_FIRST_SUBMIT = 100_000
WINDOW = 50
BARE_MAX = 10_000  # messages per bare-channel run
CAMPAIGN_SYSTEM_ID = "bench"
ONE_PART_SMS = "{#- bench: one GSM-7 part -#}\nCanh bao: thiet bi cua Quy khach nhiem ma doc. LH {{ operator.hotline }}, ma {{ reference }}."
UCS2_BODY = "Nhà mạng: thiết bị của Quý khách nhiễm mã độc Mirai (IP 14.160.79.110, 15:11 18/11). " * 2


def main() -> None:
    args = _parse()
    accounts = min(args.accounts, MAX_ACCOUNTS_FIRST_SUBMIT if args.first_submit else MAX_ACCOUNTS)
    channels = args.channels.split(",")
    with tempfile.TemporaryDirectory() as tmp, _database(args, Path(tmp)) as url:
        directory = Path(tmp)
        upgrade(url)
        templates = _templates(directory, args.text)
        started = time.perf_counter()
        campaign_id = load_uniform_campaign(url, directory / "inputs", accounts=accounts, channels=channels)
        prepared = time.perf_counter()
        print(f"accounts={accounts} channels={args.channels} text={args.text} threads={args.threads} "
              f"workers={args.workers} database={sa.make_url(url).get_backend_name()}")
        print(f"import+match+plan: {prepared - started:.2f}s")
        with SmscPeer(directory / "smsc.jsonl") as smsc, SmtpSink() as smtp:
            settings = Settings(
                database_url=url, broker_url=args.broker_url if args.workers else None,
                broker_namespace=f"bench-{os.getpid()}", templates_dir=templates,
                smpp=SmppSettings(port=smsc.port, system_id=CAMPAIGN_SYSTEM_ID, window=WINDOW), smtp=SmtpSettings(port=smtp.port),
                dispatch=DispatchSettings(worker_threads=args.threads, sms_per_second=1_000_000,
                                          email_per_second=1_000_000, receipt_wait_seconds=60,
                                          sms_diacritics=args.text != "one-part"))
            if args.first_submit:
                _first_submit(settings, campaign_id, args, smsc, directory)
                return
            # The bare channel with receipts runs just before the campaign and again just after it,
            # as many messages as the campaign (up to BARE_MAX): the share is taken of their mean, so
            # a drift of the machine's speed during the run (this one's shared host has them) does not
            # land on one side of the comparison only.
            bare_count = min(accounts, BARE_MAX)
            before = _bare_channel(smsc, args.text, count=bare_count, threads=args.threads, receipts=True) \
                if "sms" in channels else None
            figures = _run(settings, campaign_id, args, smsc, directory)
            parts = len(_campaign_submits(smsc))
            bare = {receipts: _bare_channel(smsc, args.text, count=bare_count, threads=args.threads,
                                            receipts=receipts)
                    for receipts in (False, True)} if before else None
        _print(figures, notifications=len(channels) * accounts, parts=parts, bare=bare, bare_before=before)


def _campaign_submits(smsc: SmscPeer) -> list[dict[str, object]]:
    """The submits of the campaign's binds, not the bare channel's (`bench-bare-…`) on the same peer."""
    return [submit for submit in smsc.submits() if submit["system_id"] == CAMPAIGN_SYSTEM_ID]


@contextmanager
def _database(args: argparse.Namespace, directory: Path) -> Iterator[str]:
    """The one given; with workers a fresh PostgreSQL database (dropped after); else a SQLite file."""
    if args.database_url:
        yield args.database_url
    elif args.workers:
        with scratch_postgres(args.postgres_admin) as url:
            yield url
    else:
        yield f"sqlite:///{directory / 'bench.db'}"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--channels", default="sms", help="the campaign's channel chain, e.g. sms, email or sms,email")
    parser.add_argument("--text", choices=["one-part", "ucs2", "template"], default="one-part",
                        help="one-part: a short GSM-7 SMS; ucs2/template: the real 3-part Vietnamese text")
    parser.add_argument("--database-url", help="an empty database to use (default: a temporary SQLite file; "
                        "with --workers, a PostgreSQL database made next to --postgres-admin and dropped after)")
    parser.add_argument("--postgres-admin", default=POSTGRES_ADMIN)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--workers", type=int, default=0, help="`notifier worker` processes (needs PostgreSQL)")
    parser.add_argument("--first-submit", action="store_true",
                        help="measure only the time from `campaign run` to the first submit, then cancel")
    return parser.parse_args()


def _templates(directory: Path, text: str) -> Path:
    """The shipped templates, with a one-part SMS for `--text one-part`."""
    if text != "one-part":
        return TEMPLATES_DIR
    copy = directory / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    for language in ("vi", "en"):
        (copy / language / "infected_device" / "sms.txt.j2").write_text(ONE_PART_SMS, encoding="utf-8")
    return copy


def _run(settings: Settings, campaign_id: int, args: argparse.Namespace, smsc: SmscPeer,
         directory: Path) -> dict[str, float]:
    """Send the campaign; the clock stops when `campaign run` has every row settled, receipts in."""
    counts: collections.Counter[str] = collections.Counter()
    engine = get_engine(settings.database_url)
    sa.event.listen(engine, "before_cursor_execute", lambda *a: counts.update(["statements"]))
    sa.event.listen(engine, "commit", lambda *a: counts.update(["commits"]))
    counts_file = directory / "sql-counts"
    workers = [_start_worker(settings, args.threads, counts_file) for _ in range(args.workers)]
    if workers:  # long-running processes in production: their start-up is not the send rate
        print(f"workers ready:     {_wait_for_workers(settings.database_url, workers):.2f}s after start (not timed)")
    backends = _BackendCpu(settings.database_url)
    threads = _ThreadCpu()
    xacts = _pg_transactions(settings.database_url)
    ours = _own_cpu()
    workers_cpu = [_process_cpu(worker.pid) for worker in workers]
    smsc_cpu = _process_cpu(smsc.pid or 0)
    began, began_wall = time.perf_counter(), time.time()
    backends.start()
    threads.start()
    try:
        status = run_campaign(settings, campaign_id)
        elapsed = time.perf_counter() - began
        by_thread = threads.stop()
        workers_cpu = [_process_cpu(worker.pid) - before for worker, before in zip(workers, workers_cpu)]
        smsc_cpu = _process_cpu(smsc.pid or 0) - smsc_cpu
        postgres_cpu = backends.stop()
        transactions = (_pg_transactions(settings.database_url) - xacts - backends.samples) if xacts is not None \
            else counts["commits"]
    finally:
        backends.stop()
        threads.stop()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    print(f"outcome:           {status['by_channel']}")
    statements = counts["statements"] + sum(_worker_counts(counts_file, worker.pid)["statements"] for worker in workers)
    # The loopback relay (`SmtpSink`) runs on a thread of this process: its CPU is the peer's, not ours.
    _, smtp_cpu = by_thread.pop(SMTP_SINK_THREAD, (0, 0.0))
    return {"elapsed": elapsed, "ours_cpu": _own_cpu() - ours - smtp_cpu + sum(workers_cpu),
            "postgres_cpu": postgres_cpu, "smsc_cpu": smsc_cpu, "smtp_cpu": smtp_cpu, "statements": statements,
            "transactions": transactions, "by_thread": by_thread if not workers else {},
            **_timeline(smsc, began_wall)}


def _first_submit(settings: Settings, campaign_id: int, args: argparse.Namespace, smsc: SmscPeer,
                  directory: Path) -> None:
    """Time from `campaign run` to the SMSC's first submit; the campaign is cancelled right after."""
    workers = [_start_worker(settings, args.threads, directory / "sql-counts") for _ in range(args.workers)]
    began, began_wall = time.perf_counter(), time.time()
    runner = threading.Thread(target=run_campaign, args=(settings, campaign_id), daemon=True)
    runner.start()
    try:
        deadline = began + 120
        while not (smsc.log_path.exists() and smsc.log_path.stat().st_size) and time.perf_counter() < deadline:
            time.sleep(0.005)
        seen = time.perf_counter() - began
        with session_scope(settings.database_url) as session:
            cancel_campaign(session, campaign_id)
        runner.join(timeout=60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    first = _timeline(smsc, began_wall)["first_submit"]
    print(f"first submit:      {first:.2f}s after `campaign run` started (seen by the bench after {seen:.2f}s); "
          f"{len(_campaign_submits(smsc))} submit(s) before the cancel")


def _timeline(smsc: SmscPeer, began_wall: float) -> dict[str, float]:
    """Seconds from the clock's start to the SMSC's first and last submit (its log's times)."""
    times = [datetime.fromisoformat(str(submit["at"])).timestamp() for submit in _campaign_submits(smsc)]
    if not times:
        return {"first_submit": float("nan"), "last_submit": float("nan")}
    return {"first_submit": min(times) - began_wall, "last_submit": max(times) - began_wall}


def _start_worker(settings: Settings, threads: int, counts_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFIER_DATABASE_URL": settings.database_url, "NOTIFIER_BROKER_URL": settings.broker_url or "",
           "NOTIFIER_BROKER_NAMESPACE": settings.broker_namespace, "NOTIFIER_TEMPLATES_DIR": str(settings.templates_dir),
           "NOTIFIER_SMPP__PORT": str(settings.smpp.port), "NOTIFIER_SMPP__SYSTEM_ID": settings.smpp.system_id,
           "NOTIFIER_SMPP__WINDOW": str(WINDOW), "NOTIFIER_SMTP__PORT": str(settings.smtp.port),
           "NOTIFIER_DISPATCH__SMS_PER_SECOND": "1000000", "NOTIFIER_DISPATCH__EMAIL_PER_SECOND": "1000000",
           "NOTIFIER_DISPATCH__SMS_DIACRITICS": str(settings.dispatch.sms_diacritics).lower(),
           SQL_COUNTS_ENV: str(counts_file)}
    return subprocess.Popen([sys.executable, "-m", "cli", "worker", "--threads", str(threads), "--channels", "sms,email"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL)


def _wait_for_workers(url: str, workers: list[subprocess.Popen[bytes]], timeout: float = 120.0) -> float:
    """Seconds until every worker has its SMPP session bound and reading (each records it in
    `smpp_session` within a second of binding, after its broker consumer was set up)."""
    began = time.perf_counter()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)  # not the send path's statements
    try:
        while time.perf_counter() - began < timeout:
            with engine.connect() as connection:
                owners = connection.execute(sa.text("SELECT owner FROM smpp_session")).scalars().all()
            if all(any(f":{worker.pid}:" in owner for owner in owners) for worker in workers):
                break
            if any(worker.poll() is not None for worker in workers):
                raise SystemExit("a worker exited during start-up")
            time.sleep(0.1)
    finally:
        engine.dispose()
    return time.perf_counter() - began


def _worker_counts(counts_file: Path, pid: int) -> dict[str, int]:
    """What a worker wrote at exit (statements, commits); zeros if it wrote nothing."""
    import json

    try:
        return json.loads(Path(f"{counts_file}.{pid}").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"statements": 0, "commits": 0}


class Bare(NamedTuple):
    """A bare-channel run: its rates, and the CPU per message of this process and of the SMSC peer."""

    messages: float
    parts: float
    ours_ms: float
    peer_ms: float


def _bare_channel(smsc: SmscPeer, text: str, *, count: int, threads: int, receipts: bool) -> Bare:
    """Rates and CPU of the SMPP channel alone, no database, batches of 100 per thread.

    With `receipts`, every part asks for a delivery receipt (as the campaign's do) and the clock
    stops when the last one has reached the channel's sink (which only counts them): the same
    protocol work as the campaign — the SMSC writing a deliver_sm per part, the channel reading,
    parsing and answering it — without the database. Without, only submits and their answers."""
    import concurrent.futures

    body = "Canh bao: thiet bi cua Quy khach nhiem ma doc. LH 00000000, ma CB-1-1." if text == "one-part" else UCS2_BODY
    sink = _CountingSink()
    channel = SmppChannel(SmppSettings(port=smsc.port, system_id=f"bench-bare-{int(receipts)}", window=WINDOW,
                                       registered_delivery=int(receipts)), sink if receipts else None)
    channel.start()
    messages = [OutgoingMessage(notification_id=i, destination=f"+8491{i:07d}", body=body) for i in range(count)]
    began, ours, peer = time.perf_counter(), _own_cpu(), _process_cpu(smsc.pid or 0)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        outcomes = [o for batch in pool.map(channel.send_many, [messages[i:i + 100] for i in range(0, count, 100)])
                    for o in batch]
    parts = sum(getattr(outcome, "parts", 0) for outcome in outcomes)
    if receipts:
        sink.wait_for(parts, timeout=120.0)
    elapsed = time.perf_counter() - began
    ours, peer = _own_cpu() - ours, _process_cpu(smsc.pid or 0) - peer
    channel.close()
    return Bare(count / elapsed, parts / elapsed, 1000 * ours / count, 1000 * peer / count)


class _CountingSink:
    """A receipt sink that stores nothing: counts what arrives, for `_bare_channel`."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def __call__(self, receipt: object) -> None:
        self.store([receipt])

    def store(self, receipts: list[object]) -> None:
        with self._changed:
            self._count += len(receipts)
            self._changed.notify_all()

    def session_alive(self, *_: object) -> None:
        """The channel reports its session's liveness; nothing to record here."""

    def wait_for(self, count: int, *, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._count >= count, timeout=timeout)


def _print(figures: dict[str, float], *, notifications: int, parts: int,
           bare: dict[bool, Bare] | None, bare_before: Bare | None) -> None:
    elapsed = figures["elapsed"]
    print(f"send+receipts:     {elapsed:.2f}s: {notifications / elapsed:.0f} notifications/s, "
          f"{parts / elapsed:.0f} SMS parts/s ({parts} parts)")
    print(f"timeline:          first submit {figures['first_submit']:.2f}s, last submit {figures['last_submit']:.2f}s, "
          f"every receipt applied {elapsed:.2f}s")
    print(f"CPU per notification: ours {1000 * figures['ours_cpu'] / notifications:.2f} ms, "
          f"PostgreSQL {1000 * figures['postgres_cpu'] / notifications:.2f} ms (our database's backends), "
          f"SMSC peer {1000 * figures['smsc_cpu'] / notifications:.2f} ms"
          + (f", SMTP peer {1000 * figures['smtp_cpu'] / notifications:.2f} ms" if figures["smtp_cpu"] else ""))
    by_thread: dict[str, tuple[int, float]] = figures["by_thread"]  # type: ignore[assignment]
    if by_thread:
        print("our CPU by thread:  " + ", ".join(
            f"{name}{f' ×{count}' if count > 1 else ''} {1000 * seconds / notifications:.2f}"
            for name, (count, seconds) in sorted(by_thread.items(), key=lambda item: -item[1][1])
            if 1000 * seconds / notifications >= 0.005) + " ms per notification")
    print(f"per notification:  {figures['statements'] / notifications:.2f} SQL statements (all our processes), "
          f"{figures['transactions'] / notifications:.3f} transactions")
    if bare is not None and bare_before is not None:
        before, after = bare_before, bare[True]
        mean_parts = (before.parts + after.parts) / 2
        print(f"bare SMPP channel, with a receipt per part: {(before.messages + after.messages) / 2:.0f} messages/s, "
              f"{mean_parts:.0f} parts/s (end to end = {100 * (parts / elapsed) / mean_parts:.0f}% of its parts/s; "
              f"{before.parts:.0f} parts/s just before the campaign, {after.parts:.0f} just after); CPU per message: "
              f"its own {(before.ours_ms + after.ours_ms) / 2:.2f} ms, SMSC peer {(before.peer_ms + after.peer_ms) / 2:.2f} ms")
        alone = bare[False]
        print(f"bare SMPP channel, submits only, no receipts: {alone.messages:.0f} messages/s, {alone.parts:.0f} parts/s "
              f"(end to end = {100 * (parts / elapsed) / alone.parts:.0f}% of its parts/s)")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """utime + stime of a live process and its threads, in seconds (0 if it is gone)."""
    return _stat_cpu(f"/proc/{pid}/stat") or 0.0


def _stat_cpu(path: str) -> float | None:
    """utime + stime in seconds from a /proc `stat` file (a process's or a thread's); None if gone."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Sampler:
    """Calls `sample()` every PERIOD s on a thread of its own (named `bench-…`, so the split by
    thread leaves the benchmark's samplers out) from `start()` until `_finish()`, which takes one
    last sample: what it reads (backends, threads) may end with the run."""

    PERIOD = 0.2

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"bench-{name}")

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Stop (once; a second call does nothing) after a last sample."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.PERIOD):
            self.sample()


class _BackendCpu(_Sampler):
    """CPU of the PostgreSQL backends serving our database, not the whole server: their pids are
    sampled from pg_stat_activity during the run (workers' backends end with them), each
    backend's CPU read from /proc. Nothing on SQLite."""

    def __init__(self, url: str) -> None:
        super().__init__("pg-cpu")
        self._url = url if url.startswith("postgresql") else None
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.samples = 0  # one transaction each in pg_stat_database: the bench subtracts them
        # Its own engine: these queries are not the send path's statements.
        self._engine = sa.create_engine(self._url, poolclass=sa.pool.StaticPool) if self._url else None
        if self._url:
            self._sample(baseline=True)

    def start(self) -> None:
        if self._url:
            super().start()

    def stop(self) -> float:
        """Stop sampling (after one last sample); CPU seconds our backends used since the start."""
        if self._url:
            self._finish()
        return sum(self._last[pid] - self._first.get(pid, 0.0) for pid in self._last)

    def sample(self) -> None:
        self._sample(baseline=False)

    def _sample(self, *, baseline: bool) -> None:
        self.samples += 1
        with self._engine.connect() as connection:  # type: ignore[union-attr]
            pids = connection.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars().all()
        for pid in pids:
            cpu = _process_cpu(pid)
            if cpu:
                if baseline:
                    self._first[pid] = cpu
                self._last[pid] = max(cpu, self._last.get(pid, 0.0))


class _ThreadCpu(_Sampler):
    """CPU of this process's threads during the run (embedded mode: the worker's threads live here),
    by role: a thread's name, or its class for the unnamed ones (dramatiq's `WorkerThread`s are the
    senders). Sampled from /proc, since the worker's threads end with the run."""

    def __init__(self) -> None:
        super().__init__("thread-cpu")
        self._first = self._read()
        self._last: dict[int, tuple[str, float]] = {}

    def stop(self) -> dict[str, tuple[int, float]]:
        """role → (threads, CPU seconds they used since the start)."""
        self._finish()
        roles: dict[str, tuple[int, float]] = {}
        for native_id, (role, cpu) in self._last.items():
            used = cpu - self._first.get(native_id, (role, 0.0))[1]
            if used > 0:
                count, total = roles.get(role, (0, 0.0))
                roles[role] = (count + 1, total + used)
        return roles

    def sample(self) -> None:
        self._last.update(self._read())

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for thread in threading.enumerate():
            if thread.name.startswith("bench-") or thread.native_id is None:
                continue
            role = type(thread).__name__ if thread.name.startswith("Thread-") else thread.name
            cpu = _stat_cpu(f"/proc/self/task/{thread.native_id}/stat")
            if cpu is not None:
                found[thread.native_id] = (role, cpu)
        return found


def _pg_transactions(url: str) -> int | None:
    if not url.startswith("postgresql"):
        return None
    with get_engine(url).connect() as connection:
        return int(connection.execute(sa.text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")).scalar())


if __name__ == "__main__":
    main()
