"""Operators pause, resume and cancel campaigns: nothing is lost or sent twice."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import pytest

from notifier.campaigns import cancel_campaign, pause_campaign
from notifier.db import session_scope
from notifier.dispatch.loops import run_campaign
from notifier.errors import InputError
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from tests.conftest import make_settings
from tests.peer_counts import assert_one_sms_each
from tests.test_crash_recovery import ACCOUNTS, _campaign


def test_pause_then_resume_sends_everyone_exactly_once(sqlite_url: str, tmp_path: Path, smtp: SmtpSink) -> None:
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc:
        _pause_and_resume(sqlite_url, tmp_path, smsc, smtp)


def _pause_and_resume(sqlite_url: str, tmp_path: Path, smsc: SmscPeer, smtp: SmtpSink) -> None:
    settings = make_settings(sqlite_url, smsc=smsc, smtp=smtp, dispatch={"sms_per_second": 60})
    campaign_id = _campaign(tmp_path, sqlite_url)
    result: dict[str, object] = {}
    runner = threading.Thread(target=lambda: result.update(run_campaign(settings, campaign_id)))
    runner.start()
    deadline = time.monotonic() + 60
    while len(smsc.submits()) < 30:
        assert time.monotonic() < deadline, "the campaign did not start sending"
        time.sleep(0.05)
    with session_scope(sqlite_url) as session:
        pause_campaign(session, campaign_id)
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert result["state"] == "paused"
    assert result["states"].get("queued", 0) > 0  # type: ignore[union-attr]

    resumed = run_campaign(settings, campaign_id)
    assert resumed["state"] == "done"
    assert resumed["by_channel"]["sms"] == {"delivered": ACCOUNTS}
    assert_one_sms_each(smsc, ACCOUNTS)


def test_cancel_stops_what_was_not_sent(database_url: str, tmp_path: Path) -> None:
    campaign_id = _campaign(tmp_path, database_url)
    with session_scope(database_url) as session:
        assert cancel_campaign(session, campaign_id) == 2 * ACCOUNTS
    status = run_campaign(make_settings(database_url), campaign_id)
    assert status["state"] == "cancelled"
    assert status["states"] == {"cancelled": 2 * ACCOUNTS}
    with session_scope(database_url) as session, pytest.raises(InputError, match="cancelled"):
        pause_campaign(session, campaign_id)


# --- live control across worker processes, and an operator's retry ------------------------------


def test_pause_reaches_every_worker_within_2_s_and_resume_sends_the_rest_once(
    postgres_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    """Two `notifier worker` processes: after a pause no new submit reaches the SMSC once 2 s
    have passed, `campaign run` stops; `campaign run` again resumes and sends everyone once."""
    from tests.test_dispatch_faults import _Run, _production, _wait_for_heartbeats, _workers
    from tests.waiting import wait_until

    campaign_id = _campaign(tmp_path, postgres_url)
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        settings = _production(postgres_url, smsc, smtp, redis_url, redis_namespace, requeue_after_seconds=3,
                               sms_per_second=30, email_per_second=30)
        with _workers(settings, 2):
            _wait_for_heartbeats(redis_url, redis_namespace, 2)
            run = _Run(settings, campaign_id)
            wait_until(lambda: len(smsc.submits()) >= 20, "20 submits")
            with session_scope(postgres_url) as session:
                pause_campaign(session, campaign_id)
            paused = run.finish()
            time.sleep(2)  # the bound the issue sets for a pause to reach every worker
            after_pause = len(smsc.submits())
            time.sleep(2)
            assert len(smsc.submits()) == after_pause, "a worker kept sending a paused campaign"
            assert paused["state"] == "paused" and paused["states"].get("queued", 0) > 0  # type: ignore[union-attr]

            resumed = run_campaign(settings, campaign_id)
        assert resumed["state"] == "done"
        assert resumed["by_channel"] == {"sms": {"delivered": ACCOUNTS}, "email": {"delivered": ACCOUNTS}}
        assert_one_sms_each(smsc, ACCOUNTS)


def test_retry_sends_again_only_what_the_operator_chose(sqlite_url: str, tmp_path: Path) -> None:
    """Refused numbers fail at once; `campaign retry --state failed` sends those again through a
    route that now takes them, and never a delivered one."""
    from typer.testing import CliRunner

    import cli
    from notifier.campaigns import retry_campaign
    from notifier.settings import reset_settings
    from tests.factories import settings_env

    campaign_id = _campaign(tmp_path, sqlite_url)
    with SmscPeer(tmp_path / "first.jsonl", reject={"3": 0x0B}) as refusing, SmtpSink() as smtp:
        first = run_campaign(make_settings(sqlite_url, smsc=refusing, smtp=smtp), campaign_id)
    failed = first["by_channel"]["sms"].get("failed", 0)  # type: ignore[index]
    assert first["state"] == "done" and failed > 0
    with session_scope(sqlite_url) as session, pytest.raises(InputError, match="delivered"):
        retry_campaign(session, campaign_id, ["delivered"])

    with SmscPeer(tmp_path / "second.jsonl") as smsc, SmtpSink() as smtp:
        env = settings_env(make_settings(sqlite_url, smsc=smsc, smtp=smtp))
        reset_settings()
        try:
            retried = CliRunner().invoke(cli.app, ["campaign", "retry", str(campaign_id), "--state", "failed"], env=env)
        finally:
            reset_settings()
        assert retried.exit_code == 0, retried.output
        assert f"{failed} notification(s) (failed) will be sent again" in retried.output
        second = run_campaign(make_settings(sqlite_url, smsc=smsc, smtp=smtp), campaign_id)
        assert second["by_channel"] == {"sms": {"delivered": ACCOUNTS}, "email": {"delivered": ACCOUNTS}}
        resent = collections.Counter(m["destination"] for m in smsc.messages())
        assert len(resent) == failed and set(resent.values()) == {1}
        assert all(number.endswith("3") for number in resent)
        assert not smtp.messages()  # every e-mail was delivered the first time: none sent again
