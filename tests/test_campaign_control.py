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
    per_destination = collections.Counter(m["destination"] for m in smsc.messages())
    assert len(per_destination) == ACCOUNTS and set(per_destination.values()) == {1}


def test_cancel_stops_what_was_not_sent(database_url: str, tmp_path: Path) -> None:
    campaign_id = _campaign(tmp_path, database_url)
    with session_scope(database_url) as session:
        assert cancel_campaign(session, campaign_id) == 2 * ACCOUNTS
    status = run_campaign(make_settings(database_url), campaign_id)
    assert status["state"] == "cancelled"
    assert status["states"] == {"cancelled": 2 * ACCOUNTS}
    with session_scope(database_url) as session, pytest.raises(InputError, match="cancelled"):
        pause_campaign(session, campaign_id)
