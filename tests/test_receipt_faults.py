"""Receipts under faults: several appliers at once, a locked database, a frozen / killed SMSC, a
killed sender. After each, every row is final and the SMSC saw each SMS exactly once (messages
reassembled per destination from the peer's JSON-lines log).

Each test starts its own SMSC process and stops it by pid; waits are bounded deadlines.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from channels.base import Receipt
from channels.smpp import SmppChannel
from notifier.db import session_scope, upgrade
from notifier.demo_data import load_uniform_campaign
from notifier.dispatch.receipts import ReceiptStore, apply_pending_receipts, store_receipts
from notifier.models import DeliveryEvent, InboundReceipt, MessagePart, Notification
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.settings import SmppSettings
from tests.conftest import make_settings
from tests.factories import add_account, add_notification, settings_env
from tests.peer_counts import assert_one_sms_each
from tests.waiting import wait_until

PROJECT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_SECONDS = 240


# --- 4 processes applying receipts at once (PostgreSQL) --------------------------------------

NOTIFICATIONS, PARTS = 300, 3


def _sent_messages(database_url: str) -> tuple[list[int], list[Receipt]]:
    """NOTIFICATIONS sent SMS of PARTS parts each, and a delivery receipt for every part."""
    with session_scope(database_url) as session:
        account = add_account(session, "A1")
        ids = []
        for n in range(NOTIFICATIONS):
            notification = add_notification(session, account, state="sent", destination=f"+8491{n:07d}")
            notification.parts = PARTS
            ids.append(notification.id)
            for part in range(1, PARTS + 1):
                session.add(MessagePart(notification_id=notification.id, part_no=part, channel="sms",
                                        provider_message_id=f"{n:x}p{part}"))
    receipts = [Receipt(channel="sms", provider_message_id=f"{n:x}p{part}", status="delivered",
                        raw_status="DELIVRD") for n in range(NOTIFICATIONS) for part in range(1, PARTS + 1)]
    return ids, receipts


def _applier(database_url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Apply until nothing is pending for a while; report how many and any error."""
    applied, idle, error = 0, 0, None
    try:
        while idle < 20:
            with session_scope(database_url) as session:
                count = apply_pending_receipts(session)
            applied += count
            idle = 0 if count else idle + 1
            time.sleep(0.01)
    except Exception as exc:  # noqa: BLE001 - the test reports it
        error = f"{type(exc).__name__}: {exc}"
    results.put((applied, error))


def test_four_processes_apply_receipts_at_once_without_deadlock(postgres_url: str) -> None:
    ids, receipts = _sent_messages(postgres_url)
    random.Random(7).shuffle(receipts)  # parts of one message in different batches and processes
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    processes = [context.Process(target=_applier, args=(postgres_url, results)) for _ in range(4)]
    for process in processes:
        process.start()
    for start in range(0, len(receipts), 60):  # receipts keep arriving while the appliers run
        with session_scope(postgres_url) as session:
            store_receipts(session, receipts[start:start + 60])
        time.sleep(0.02)
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [error for _, error in outcomes if error] == []
    assert sum(applied for applied, _ in outcomes) == len(receipts)  # each receipt applied once
    with session_scope(postgres_url) as session:
        states = collections.Counter(session.exec(select(Notification.state).where(Notification.id.in_(ids))).all())
        assert states == {"delivered": NOTIFICATIONS}
        assert session.exec(select(sa.func.count()).select_from(InboundReceipt)
                            .where(InboundReceipt.applied_at.is_(None))).one() == 0
        delivered_events = session.exec(select(DeliveryEvent.notification_id).where(
            DeliveryEvent.to_state == "delivered", DeliveryEvent.from_state == "sent")).all()
        assert sorted(delivered_events) == sorted(ids)  # one transition each, never two
        assert session.exec(select(sa.func.count()).select_from(MessagePart)
                            .where(MessagePart.state != "delivered")).one() == 0


def _writer(database_url: str, receipts: list[Receipt], results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Store receipts as the SMPP channel's writer does (applying what it can at once), in batches."""
    error = None
    try:
        store = ReceiptStore(database_url)
        for start in range(0, len(receipts), 30):
            store.store(receipts[start:start + 30])
            time.sleep(0.01)
    except Exception as exc:  # noqa: BLE001 - the test reports it
        error = f"{type(exc).__name__}: {exc}"
    results.put((0, error))


def test_writers_applying_at_store_and_appliers_at_once_apply_each_receipt_once(postgres_url: str) -> None:
    """Two processes storing (and applying at store) the receipts of the same messages while two
    appliers take what is pending: no deadlock, no error, every receipt applied exactly once."""
    ids, receipts = _sent_messages(postgres_url)
    random.Random(11).shuffle(receipts)  # parts of one message stored by both writers at once
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    half = len(receipts) // 2
    processes = [context.Process(target=_writer, args=(postgres_url, receipts[:half], results)),
                 context.Process(target=_writer, args=(postgres_url, receipts[half:], results)),
                 *[context.Process(target=_applier, args=(postgres_url, results)) for _ in range(2)]]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [error for _, error in outcomes if error] == []
    with session_scope(postgres_url) as session:
        assert session.exec(select(sa.func.count()).select_from(InboundReceipt)).one() == len(receipts)
        assert session.exec(select(sa.func.count()).select_from(InboundReceipt)
                            .where(InboundReceipt.applied_at.is_(None))).one() == 0
        states = collections.Counter(session.exec(select(Notification.state).where(Notification.id.in_(ids))).all())
        assert states == {"delivered": NOTIFICATIONS}
        delivered_events = session.exec(select(DeliveryEvent.notification_id).where(
            DeliveryEvent.to_state == "delivered", DeliveryEvent.from_state == "sent")).all()
        assert sorted(delivered_events) == sorted(ids)  # one transition each, never two
        receipt_events = session.exec(select(sa.func.count()).select_from(DeliveryEvent)
                                      .where(DeliveryEvent.source == "sms-receipt")).one()
        assert receipt_events == len(receipts)  # one event per receipt: none applied twice


# --- a database lock longer than the submit timeout while receipts arrive --------------------

def test_a_locked_database_does_not_block_the_smpp_reader(sqlite_url: str, tmp_path: Path) -> None:
    upgrade(sqlite_url)
    store = ReceiptStore(sqlite_url)  # the writer thread waits on the lock; the reader must not
    with SmscPeer(tmp_path / "smsc.jsonl", receipt_retry=0.5) as smsc:
        channel = SmppChannel(SmppSettings(port=smsc.port, system_id="locked", submit_timeout_seconds=2.0),
                              on_receipt=store)
        channel.start()
        path = sa.make_url(sqlite_url).database
        blocker = sqlite3.connect(path, timeout=5)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # hold the write lock for 3× the submit timeout
            started = time.monotonic()
            sent = []
            while time.monotonic() - started < 6.0:
                sent.append(channel.send(_message(len(sent))))  # OutcomeUnknownError if the reader stalls
            blocker.rollback()
        finally:
            blocker.close()
        wanted = {pid for res in sent for pid in res.provider_message_ids}

        def stored() -> set[str]:
            with session_scope(sqlite_url) as session:
                return set(session.exec(select(InboundReceipt.provider_message_id)).all())

        wait_until(lambda: stored() >= wanted, "every receipt stored once the lock is gone")
        channel.close()
    assert_one_sms_each(smsc, len(sent))


def _message(n: int):  # type: ignore[no-untyped-def]
    from channels.base import OutgoingMessage

    return OutgoingMessage(notification_id=n + 1, destination=f"+8491{n:07d}", body=f"Canh bao {n}",
                           reference=f"notification-{n + 1}")


# --- campaigns under SMSC and sender faults ---------------------------------------------------

ACCOUNTS = 80


def _env(settings, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {**settings_env(settings), "NOTIFIER_SMPP__SUBMIT_TIMEOUT_SECONDS": "2",
            "NOTIFIER_SMPP__ENQUIRE_LINK_SECONDS": "1", "NOTIFIER_DISPATCH__ROUTE_DOWN_SECONDS": "60", **extra}


def _run(campaign_id: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli", "campaign", "run", str(campaign_id), "--json"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=PROJECT)


def _finish(process: subprocess.Popen[str]) -> dict[str, object]:
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"campaign run did not finish: {stderr[-3000:]}") from None
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout)  # type: ignore[no-any-return]


def _all_final(database_url: str) -> collections.Counter[str]:
    with session_scope(database_url) as session:
        return collections.Counter(session.exec(select(Notification.state)).all())


def test_smsc_frozen_longer_than_the_submit_timeout(sqlite_url: str, tmp_path: Path) -> None:
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc:
        settings = make_settings(sqlite_url, smsc=smsc, dispatch={"sms_per_second": 40,
                                                                  "unknown_resend_after_seconds": 4})
        campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "in", accounts=ACCOUNTS, channels=["sms"])
        run = _run(campaign_id, _env(settings))
        wait_until(lambda: len(smsc.submits()) >= 20, "the first submits")
        smsc.freeze()
        time.sleep(5)  # > 2 s submit timeout: the writes in flight get no answer
        smsc.thaw()
        status = _finish(run)
        assert status["by_channel"]["sms"] == {"delivered": ACCOUNTS}, status  # type: ignore[index]
    assert_one_sms_each(smsc, ACCOUNTS)


def test_smsc_killed_and_restarted_mid_campaign(sqlite_url: str, tmp_path: Path) -> None:
    smsc = SmscPeer(tmp_path / "smsc.jsonl", receipt_delay=0.3).start()
    try:
        settings = make_settings(sqlite_url, smsc=smsc, dispatch={"sms_per_second": 40,
                                                                  "unknown_resend_after_seconds": 4})
        campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "in", accounts=ACCOUNTS, channels=["sms"])
        run = _run(campaign_id, _env(settings))
        wait_until(lambda: len(smsc.submits()) >= 25, "the first submits")
        smsc.kill()
        time.sleep(2)
        smsc.start()  # same port, same log; receipts it had not delivered come back from its journal
        status = _finish(run)
        assert status["by_channel"]["sms"] == {"delivered": ACCOUNTS}, status  # type: ignore[index]
    finally:
        smsc.stop()
    assert_one_sms_each(smsc, ACCOUNTS)


def test_smsc_dies_between_the_parts_of_a_long_sms(sqlite_url: str, tmp_path: Path) -> None:
    """The SMSC takes the first part of a message and dies before reading the next: the parts it
    took are proved by their receipts after the restart, the others never will be. The row stays
    `unknown` until the receipts had their chance, then the whole message goes again (a fresh
    concatenation reference: the handset shows the whole text once, never a fragment alone)."""
    smsc = SmscPeer(tmp_path / "smsc.jsonl", receipt_delay=0.3, crash_after=11).start()
    try:
        settings = make_settings(sqlite_url, smsc=smsc, dispatch={"sms_per_second": 40,
                                                                  "unknown_resend_after_seconds": 4})
        campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "in", accounts=ACCOUNTS, channels=["sms"])
        run = _run(campaign_id, _env(settings))
        wait_until(lambda: not smsc.running, "the SMSC's crash")
        smsc.crash_after = None
        smsc.start()  # same port, same log; the receipts of what it took come back from its journal
        status = _finish(run)
        assert status["by_channel"]["sms"] == {"delivered": ACCOUNTS}, status  # type: ignore[index]
        assert status["resent_after_unknown"] >= 1, status
    finally:
        smsc.stop()
    assert smsc.fragments(), "the crash was meant to fall between two parts of one message"
    assert_one_sms_each(smsc, ACCOUNTS)


def test_a_throttling_smsc_that_refuses_a_later_part_gets_the_whole_message_again(
        sqlite_url: str, tmp_path: Path) -> None:
    """Our route allows more than the SMSC takes (it refuses parts beyond 11 in a second with
    ESME_RTHROTTLED): some long SMS have their first parts accepted and a later one refused. Such a
    message goes again whole after the backoff (a refusal is retryable) — never `failed` while the
    SMSC would take it — and each handset joins exactly one complete message."""
    with SmscPeer(tmp_path / "smsc.jsonl", receipt_delay=0.2, throttle_above=11) as smsc:
        settings = make_settings(sqlite_url, smsc=smsc, dispatch={"sms_per_second": 60, "max_retries": 12})
        campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "in", accounts=30, channels=["sms"])
        status = _finish(_run(campaign_id, _env(settings)))
        assert status["by_channel"]["sms"] == {"delivered": 30}, status  # type: ignore[index]
    assert smsc.fragments(), "the SMSC was meant to refuse a part inside some message"
    assert_one_sms_each(smsc, 30)


def test_kill_9_with_receipts_stored_but_not_applied_then_rerun(postgres_url: str, tmp_path: Path) -> None:
    with SmscPeer(tmp_path / "smsc.jsonl", receipt_delay=0.5) as smsc, SmtpSink() as smtp:
        settings = make_settings(postgres_url, smsc=smsc, smtp=smtp,
                                 dispatch={"sms_per_second": 60, "unknown_resend_after_seconds": 3})
        campaign_id = load_uniform_campaign(postgres_url, tmp_path / "in", accounts=ACCOUNTS, channels=["sms"])
        env = _env(settings)
        first = _run(campaign_id, env)
        wait_until(lambda: len(smsc.submits()) >= 40, "40 submits")
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
        assert _all_final(postgres_url)["delivered"] < ACCOUNTS
        status = _finish(_run(campaign_id, env))
        assert status["by_channel"]["sms"] == {"delivered": ACCOUNTS}, status  # type: ignore[index]
        with session_scope(postgres_url) as session:
            assert session.exec(select(sa.func.count()).select_from(InboundReceipt)
                                .where(InboundReceipt.applied_at.is_(None))).one() == 0
    assert_one_sms_each(smsc, ACCOUNTS)
