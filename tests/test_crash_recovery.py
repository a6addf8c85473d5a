"""kill -9 in the middle of `campaign run`, run it again: every notification is sent exactly once.

The SMSC keeps the receipts of messages whose sender died and hands them to the next bind, as
real SMSCs do; our recovery uses them to settle the rows the dead process never recorded.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import select

from notifier.db import session_scope
from notifier.models import DeliveryEvent, Notification
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from tests.conftest import make_settings
from notifier.demo_data import load_uniform_campaign
from tests.factories import settings_env
from tests.peer_counts import assert_one_sms_each

ACCOUNTS = 120
KILL_AFTER_SUBMITS = 60
RUN_TIMEOUT_SECONDS = 240


def _campaign(tmp_path: Path, database_url: str) -> int:
    return load_uniform_campaign(database_url, tmp_path / "inputs", accounts=ACCOUNTS, channels=["sms", "email"])


def _run(campaign_id: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli", "campaign", "run", str(campaign_id), "--json"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parent.parent)


def _wait_for_submits(smsc: SmscPeer, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(smsc.submits()) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the campaign did not start sending"
        time.sleep(0.05)


def test_kill_9_mid_campaign_then_rerun_sends_each_notification_once(sqlite_url: str, tmp_path: Path) -> None:
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        settings = make_settings(sqlite_url, smsc=smsc, smtp=smtp,
                                 dispatch={"sms_per_second": 60, "email_per_second": 20,
                                           "unknown_resend_after_seconds": 3})
        campaign_id = _campaign(tmp_path, sqlite_url)
        env = settings_env(settings)

        first = _run(campaign_id, env)
        _wait_for_submits(smsc, KILL_AFTER_SUBMITS, first)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
        assert first.returncode == -signal.SIGKILL
        with session_scope(sqlite_url) as session:
            states = collections.Counter(session.exec(select(Notification.state)).all())
        assert states["planned"] + states["queued"] > 0, f"killed too late to prove anything: {states}"

        second = _run(campaign_id, env)
        stdout, stderr = second.communicate(timeout=RUN_TIMEOUT_SECONDS)
        assert second.returncode == 0, stderr
        status = json.loads(stdout)

        assert status["state"] == "done"
        assert status["by_channel"]["sms"] == {"delivered": ACCOUNTS}, status
        assert status["by_channel"]["email"] == {"delivered": ACCOUNTS}, status

        # SMS: each subscriber got exactly one message, complete, whatever the kill interrupted.
        assert_one_sms_each(smsc, ACCOUNTS)

        # E-mail: every notification arrived; a message whose acceptance the killed process could
        # not record is sent again with the same Message-ID, so mail stores keep one copy.
        with session_scope(sqlite_url) as session:
            emails = session.exec(select(Notification).where(Notification.channel == "email")).all()
            resent = session.exec(select(DeliveryEvent.notification_id).where(
                DeliveryEvent.to_state == "unknown")).all()
        mail_ids = collections.Counter(str(m.message["Message-ID"]) for m in smtp.messages())
        assert {f"notification-{n.id}" for n in emails} == {mid.strip("<>").split("@")[0] for mid in mail_ids}
        duplicates = sum(count - 1 for count in mail_ids.values())
        assert duplicates <= len([nid for nid in resent if nid in {n.id for n in emails}])


# --- an `unknown` SMS is decided once (issue 6, item 1) -----------------------------------------

def _unknown_sms(session, seconds_ago: int = 120) -> Notification:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from notifier.models import utcnow
    from tests.factories import add_account, add_notification

    notification = add_notification(session, add_account(session, "U1"), state="unknown")
    notification.updated_at = utcnow() - timedelta(seconds=seconds_ago)
    session.flush()
    return notification


def test_an_unknown_sms_is_resent_only_after_an_smsc_was_heard_since(database_url: str) -> None:
    from notifier.campaigns import campaign_status
    from notifier.dispatch.receipts import record_session_alive
    from notifier.dispatch.recovery import requeue_stale_unknown
    from notifier.models import utcnow

    with session_scope(database_url) as session:
        row = _unknown_sms(session)
        # the last session heard its SMSC before the row became unknown (a frozen or dead SMSC)
        record_session_alive(session, owner="h:1:1", system_id="t", bound_at=row.updated_at,
                             alive_at=row.updated_at)
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=60) == []
        record_session_alive(session, owner="h:1:2", system_id="t", bound_at=utcnow())
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=60) == [row.id]
        event = session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == row.id,
                                                         DeliveryEvent.to_state == "queued")).one()
        assert event.detail.startswith("resent after unknown")
        assert campaign_status(session, row.campaign_id)["resent_after_unknown"] == 1


def test_an_unknown_sms_waits_for_the_smscs_redelivery_timer_before_a_resend(database_url: str) -> None:
    """A session heard the SMSC 30 s after the row became unknown: enough for the 3 s settle, not for
    an SMSC that keeps a dead bind's receipt 60 s before offering it to another bind."""
    from datetime import timedelta

    from notifier.dispatch.receipts import record_session_alive
    from notifier.dispatch.recovery import requeue_stale_unknown

    with session_scope(database_url) as session:
        row = _unknown_sms(session, seconds_ago=120)
        record_session_alive(session, owner="h:1:1", system_id="t", bound_at=row.updated_at,
                             alive_at=row.updated_at + timedelta(seconds=30))
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=60, smsc_hold_seconds=60) == []
        assert requeue_stale_unknown(session, after_seconds=60, smsc_hold_seconds=20) == [row.id]


def test_stored_receipts_for_an_unknown_sms_are_applied_before_any_resend(database_url: str) -> None:
    from channels.base import Receipt
    from notifier.dispatch.receipts import record_receipt, record_session_alive
    from notifier.dispatch.recovery import run_maintenance
    from notifier.models import utcnow

    with session_scope(database_url) as session:
        row = _unknown_sms(session)
        record_session_alive(session, owner="h:1:1", system_id="t", bound_at=utcnow())
        # a receipt the SMSC handed over at the bind, not applied yet (and still within the grace)
        record_receipt(session, Receipt(channel="sms", provider_message_id="beef", status="delivered",
                                        raw_status="DELIVRD", destination=row.destination))
    settings = make_settings(database_url, dispatch={"unknown_resend_after_seconds": 3})
    assert run_maintenance(settings).requeued == []  # the receipt is pending: no resend
    deadline = time.monotonic() + 15
    while True:
        with session_scope(database_url) as session:
            state = session.get(Notification, row.id).state
        if state == "delivered" or time.monotonic() > deadline:
            break
        run_maintenance(settings)
        time.sleep(0.2)
    assert state == "delivered"
    with session_scope(database_url) as session:
        assert session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == row.id,
                                                        DeliveryEvent.to_state == "queued")).all() == []


def test_campaign_reconcile_lists_and_decides_unknown_rows(cli_db: str) -> None:
    from typer.testing import CliRunner

    import cli

    with session_scope(cli_db) as session:
        row = _unknown_sms(session)
        campaign_id = row.campaign_id
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["campaign", "reconcile", str(campaign_id), "--json"])
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert [item["id"] for item in document["unknown"]] == [row.id]
    assert "+84912345678" not in listed.stdout  # masked
    decided = runner.invoke(cli.app, ["campaign", "reconcile", str(campaign_id), "--mark-failed", "--json"])
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.stdout)["decided"] == [row.id]
    with session_scope(cli_db) as session:
        assert session.get(Notification, row.id).state == "failed"
