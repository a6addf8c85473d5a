"""Faults on purpose, counted at the peers: nothing lost, nothing sent twice.

Each test breaks one part for real while a campaign runs — Redis killed and restarted (a
redis-server of the test's own), PostgreSQL connections terminated, the SMSC route and the mail
relay gone for a while, one of two workers killed with SIGKILL, workers already idle when
`campaign run` queues (the commit race) — then checks that every row is final, that each
subscriber got one complete SMS (reassembled per destination at the SMSC) and one e-mail, and
that nothing failed that the peer could have taken once it was back.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa

from notifier.db import session_scope
from notifier.demo_data import load_uniform_campaign
from notifier.dispatch.loops import run_campaign
from notifier.models import Notification
from notifier.peers import free_port, wait_for_port
from notifier.peers.smsc import RESPONSE_TIMEOUT_SECONDS, SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL, make_settings
from tests.factories import settings_env
from tests.test_operator_views import CuttableRoute
from tests.peer_counts import assert_one_sms_each
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
RUN_SECONDS = 240.0  # bound on any campaign here; each finishes in well under a minute when healthy
ACCOUNTS = 120
OUTAGE_SECONDS = 90  # "SMSC and SMTP down for 90 s then back" (issue 6)


# --- parts of our own ------------------------------------------------------------------------


class RedisProcess:
    """A redis-server of this test on a free port, without persistence: killing it loses every
    message, as a restart of an unpersisted Redis does. Stopped by its pid."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the Redis fault tests"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _worker(settings: Settings, **extra: str) -> subprocess.Popen[str]:
    """A `notifier worker` process with these settings; its stderr goes to a file we read later."""
    env = {**os.environ, **settings_env(settings), **_fault_env(settings), **extra}
    return subprocess.Popen([sys.executable, "-m", "cli", "worker", "--threads", "4"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _fault_env(settings: Settings) -> dict[str, str]:
    """The dispatch settings `settings_env` does not carry."""
    d = settings.dispatch
    return {"NOTIFIER_DISPATCH__REQUEUE_AFTER_SECONDS": str(d.requeue_after_seconds),
            "NOTIFIER_DISPATCH__ROUTE_DOWN_SECONDS": str(d.route_down_seconds),
            "NOTIFIER_DISPATCH__ROUTE_OUTAGE_MAX_SECONDS": str(d.route_outage_max_seconds),
            "NOTIFIER_DISPATCH__SEND_LEASE_SECONDS": str(d.send_lease_seconds),
            "NOTIFIER_SMPP__CONNECT_TIMEOUT_SECONDS": "2", "NOTIFIER_SMTP__TIMEOUT_SECONDS": "2"}


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM by pid (SIGKILL if it does not stop); returns what it wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=10)
    return stderr or ""


@contextmanager
def _workers(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    processes = [_worker(settings) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            _stop(process)


class _Run:
    """`campaign run` (production shape: queue and follow) in a thread of the test."""

    def __init__(self, settings: Settings, campaign_id: int) -> None:
        self.result: dict[str, object] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, campaign_id), daemon=True)
        self.thread.start()

    def _run(self, settings: Settings, campaign_id: int) -> None:
        try:
            self.result.update(run_campaign(settings, campaign_id))
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> dict[str, object]:
        self.thread.join(timeout=RUN_SECONDS)
        assert not self.thread.is_alive(), "campaign run did not finish"
        assert self.error is None, repr(self.error)
        return self.result


def _wait_for_heartbeats(redis_url: str, namespace: str, count: int) -> None:
    """Until `count` worker processes consume from the broker (dramatiq registers a heartbeat)."""
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.zcard(f"{namespace}:__heartbeats__") >= count, f"{count} idle workers")
    finally:
        client.close()


def _states(database_url: str) -> collections.Counter[str]:
    with session_scope(database_url) as session:
        return collections.Counter(session.execute(sa.select(Notification.state)).scalars())


def _assert_each_once(database_url: str, smsc: SmscPeer, smtp: SmtpSink | None, accounts: int) -> None:
    """Every row delivered; one complete SMS per number and one e-mail per address at the peers."""
    channels = 2 if smtp is not None else 1
    assert _states(database_url) == {"delivered": channels * accounts}
    assert_one_sms_each(smsc, accounts)
    if smtp is not None:
        per_address = collections.Counter(str(mail.message["To"]) for mail in smtp.wait_for(accounts, 30))
        assert len(per_address) == accounts and set(per_address.values()) == {1}, per_address.most_common(3)


def _production(database_url: str, smsc: SmscPeer, smtp: SmtpSink | None, broker_url: str, namespace: str,
                **dispatch: object) -> Settings:
    return make_settings(database_url, smsc=smsc, smtp=smtp, broker_url=broker_url, broker_namespace=namespace,
                         dispatch={"send_lease_seconds": 10, **dispatch})


# --- the commit race -------------------------------------------------------------------------


def test_workers_idle_before_the_run_queues_get_every_row_after_commit(
    postgres_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    """1,000 accounts, two workers already waiting: each id reaches them after its row committed.
    The re-drive is pushed out of the way (10 min), so only commit-then-enqueue can pass this."""
    accounts = 1000
    campaign_id = load_uniform_campaign(postgres_url, tmp_path / "inputs", accounts=accounts, channels=["sms"])
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc:
        settings = _production(postgres_url, smsc, None, redis_url, redis_namespace, requeue_after_seconds=600,
                               receipt_wait_seconds=10)
        with _workers(settings, 2):
            _wait_for_heartbeats(redis_url, redis_namespace, 2)
            status = _Run(settings, campaign_id).finish()
        assert status["state"] == "done"
        _assert_each_once(postgres_url, smsc, None, accounts)


# --- the broker and the database going away ----------------------------------------------------


def test_redis_killed_and_restarted_mid_campaign_strands_nothing(
    postgres_url: str, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """Redis dies with every queued message; the database hands the rows over again."""
    campaign_id = load_uniform_campaign(postgres_url, tmp_path / "inputs", accounts=ACCOUNTS, channels=["sms", "email"])
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        settings = _production(postgres_url, smsc, smtp, own_redis.url, "faults", requeue_after_seconds=3,
                               sms_per_second=30, email_per_second=30)
        with _workers(settings, 1) as [worker]:
            run = _Run(settings, campaign_id)
            wait_until(lambda: len(smsc.submits()) >= 20, "the first submits")
            own_redis.kill()
            time.sleep(2)  # an outage, not a blip: enqueues and consumers fail meanwhile
            own_redis.start()
            status = run.finish()
            assert worker.poll() is None, "the worker did not survive the Redis restart"
        assert status["state"] == "done"
        _assert_each_once(postgres_url, smsc, smtp, ACCOUNTS)


def test_postgres_connections_terminated_mid_campaign(
    postgres_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    """Every connection to the test database is cut three times while sending; all resume."""
    campaign_id = load_uniform_campaign(postgres_url, tmp_path / "inputs", accounts=ACCOUNTS, channels=["sms", "email"])
    database = sa.make_url(postgres_url).database
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        settings = _production(postgres_url, smsc, smtp, redis_url, redis_namespace, requeue_after_seconds=3,
                               sms_per_second=30, email_per_second=30)
        with _workers(settings, 1) as [worker]:
            run = _Run(settings, campaign_id)
            for target in (15, 40, 70):
                wait_until(lambda target=target: len(smsc.submits()) >= target, f"{target} submits")
                with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                    cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
                assert cut and cut[0] > 0
            status = run.finish()
            assert worker.poll() is None, "the worker did not survive the database outage"
        assert status["state"] == "done"
        _assert_each_once(postgres_url, smsc, smtp, ACCOUNTS)


# --- routes down, then back --------------------------------------------------------------------


def test_smsc_and_mail_relay_down_then_back_is_a_pause(sqlite_url: str, tmp_path: Path) -> None:
    """Both routes gone for 90 s mid-run (longer than the old 2+4+8+16+32 s retry budget that used
    to fail every remaining row): rows wait, nothing fails, the run resumes by itself, exits 0, and
    each outage is one line each way."""
    accounts = 40
    campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "inputs", accounts=accounts, channels=["sms", "email"])
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        route = CuttableRoute(smsc.port)
        route.restore()
        try:
            settings = make_settings(sqlite_url, smsc=smsc, smtp=smtp,
                                     # e-mail slower than SMS: some are still waiting when both routes go
                                     dispatch={"sms_per_second": 20, "email_per_second": 4, "route_down_seconds": 1,
                                               "unknown_resend_after_seconds": 20})
            env = {**os.environ, **settings_env(settings), **_fault_env(settings),
                   "NOTIFIER_SMPP__PORT": str(route.port)}
            run = subprocess.Popen([sys.executable, "-m", "cli", "campaign", "run", str(campaign_id)], env=env,
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: len(smsc.messages()) >= 5 and run.poll() is None, "the first SMS")
                route.cut()
                smtp.stop()
                time.sleep(OUTAGE_SECONDS)
                assert run.poll() is None, f"campaign run gave up during a {OUTAGE_SECONDS} s outage"
                assert _states(sqlite_url)["failed"] == 0
                route.restore()
                smtp.start()
                _, stderr = run.communicate(timeout=RUN_SECONDS)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.communicate()
            assert run.returncode == 0, stderr
            _assert_each_once(sqlite_url, smsc, smtp, accounts)
        finally:
            route.cut()
    for service in ("SMSC", "mail relay"):
        went = [line for line in stderr.splitlines() if f"cannot reach the {service}" in line]
        back = [line for line in stderr.splitlines() if f"the {service} at" in line and "answers again" in line]
        assert len(went) == 1 and len(back) == 1, stderr


# --- a worker killed ---------------------------------------------------------------------------


def test_kill_9_one_of_two_workers(postgres_url: str, redis_url: str, redis_namespace: str, tmp_path: Path) -> None:
    """The survivor finishes: the dead worker's rows are re-driven, its mid-send rows settled by
    their receipts (or resent after the unknown wait, only when no receipt came)."""
    campaign_id = load_uniform_campaign(postgres_url, tmp_path / "inputs", accounts=ACCOUNTS, channels=["sms", "email"])
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        # A receipt on its way to the victim when it died reaches the survivor once the SMSC gives up
        # on the victim's answer (the peer waits up to RESPONSE_TIMEOUT_SECONDS, like a real one):
        # `campaign run` waits longer than that for the last receipts.
        settings = _production(postgres_url, smsc, smtp, redis_url, redis_namespace, requeue_after_seconds=3,
                               sms_per_second=40, email_per_second=40,
                               receipt_wait_seconds=RESPONSE_TIMEOUT_SECONDS + 5)
        with _workers(settings, 2) as [victim, survivor]:
            _wait_for_heartbeats(redis_url, redis_namespace, 2)
            run = _Run(settings, campaign_id)
            wait_until(lambda: len(smsc.submits()) >= 30, "30 submits")
            os.kill(victim.pid, signal.SIGKILL)
            status = run.finish()
            assert survivor.poll() is None
        assert status["state"] == "done"
        _assert_each_once(postgres_url, smsc, smtp, ACCOUNTS)
