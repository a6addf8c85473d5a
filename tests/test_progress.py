"""`campaign status --watch`: counts, the rate over the last 10 s and an ETA, from grouped queries
(notifier/dispatch/progress.py), refreshed until the campaign is settled."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from notifier.db import get_engine, session_scope
from notifier.dispatch.progress import campaign_progress, describe_eta, describe_rate, format_duration
from notifier.models import Campaign, Notification, utcnow
from tests.factories import add_account

runner = CliRunner()
_account_numbers = itertools.count()


def _campaign(database_url: str, rows: list[tuple[str, str, float | None, int]]) -> int:
    """A running campaign with one notification per (channel, state, sent seconds ago, parts)."""
    now = utcnow()
    with session_scope(database_url) as session:
        campaign = Campaign(name="progress", template="infected_device", channels="sms,email", state="running",
                            started_at=now - timedelta(seconds=120))
        session.add(campaign)
        session.flush()
        for channel, state, ago, parts in rows:
            account = add_account(session, f"HN{next(_account_numbers):06d}")
            session.add(Notification(
                campaign_id=campaign.id, account_id=account.id, channel=channel, state=state, parts=parts,
                destination="+84912345678" if channel == "sms" else "a@example.vn", context="{}",
                sent_at=None if ago is None else now - timedelta(seconds=ago)))
        return int(campaign.id or 0)


ROWS = ([("sms", "delivered", 3.0, 2)] * 30 + [("email", "sent", 5.0, 1)] * 10   # last 10 s: 40 → 4/s
        + [("sms", "delivered", 30.0, 2)] * 20                                   # earlier: not in the rate
        + [("sms", "queued", None, 0)] * 40 + [("email", "planned", None, 0)] * 10  # 50 left → 12.5 s
        + [("sms", "failed", None, 0)] * 3)


def test_rate_over_the_last_ten_seconds_and_the_eta(database_url: str) -> None:
    campaign_id = _campaign(database_url, ROWS)
    with session_scope(database_url) as session:
        progress = campaign_progress(session, campaign_id)
    assert progress.per_second == {"sms": pytest.approx(3.0, abs=0.01), "email": pytest.approx(1.0, abs=0.01)}
    assert progress.sms_parts_per_second == pytest.approx(6.0, abs=0.01)
    assert progress.remaining == 50
    assert progress.eta_seconds == pytest.approx(12.5, abs=0.1)
    assert not progress.settled
    assert progress.status["by_channel"]["sms"] == {"delivered": 50, "queued": 40, "failed": 3}  # type: ignore[index]
    assert describe_rate(progress) == "rate (last 10 s): 4.0/s — sms 3.0/s (6 parts/s), email 1.0/s"
    assert describe_eta(progress) == "50 left, ETA 12 s"


def test_the_queries_do_not_grow_with_the_campaign(sqlite_url: str) -> None:
    """Counted statements: the same few for 10 rows as for 113 (grouped, never per row)."""
    def statements(campaign_id: int) -> int:
        seen: list[str] = []
        engine = get_engine(sqlite_url)
        listener = lambda *args: seen.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
        sa.event.listen(engine, "before_cursor_execute", listener)
        try:
            with session_scope(sqlite_url) as session:
                campaign_progress(session, campaign_id)
        finally:
            sa.event.remove(engine, "before_cursor_execute", listener)
        return len([s for s in seen if s.lstrip().upper().startswith("SELECT")])

    small = statements(_campaign(sqlite_url, ROWS[:10]))
    large = statements(_campaign(sqlite_url, ROWS))
    assert small == large <= 5  # campaign, counts, rate (+ what campaign_status itself reads)


def test_nothing_moving_has_no_eta_and_a_finished_campaign_is_settled(sqlite_url: str) -> None:
    waiting = _campaign(sqlite_url, [("sms", "queued", None, 0)] * 5)
    finished = _campaign(sqlite_url, [("sms", "delivered", 600.0, 1), ("email", "failed", None, 0)])
    with session_scope(sqlite_url) as session:
        idle, done = campaign_progress(session, waiting), campaign_progress(session, finished)
    assert idle.eta_seconds is None and not idle.settled
    assert describe_eta(idle).startswith("5 left, nothing moving")
    assert done.settled and done.remaining == 0 and done.total_per_second == 0
    assert [format_duration(s) for s in (45, 250, 7500)] == ["45 s", "4 min 10 s", "2 h 05 min"]


def test_watch_refreshes_until_the_campaign_is_settled(cli_db: str) -> None:
    """--watch --json: one JSON line a second while rows are queued; when another process finishes
    them, a last line says settled and the command ends by itself."""
    campaign_id = _campaign(cli_db, [("sms", "queued", None, 0)] * 4)

    def finish_later() -> None:
        time.sleep(2.5)
        with session_scope(cli_db) as session:
            session.execute(sa.update(Notification).where(Notification.campaign_id == campaign_id)
                            .values(state="delivered", sent_at=utcnow(), parts=1))
            session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(state="done"))

    finisher = threading.Thread(target=finish_later)
    finisher.start()
    try:
        result = runner.invoke(app, ["campaign", "status", str(campaign_id), "--watch", "--json"])
    finally:
        finisher.join(timeout=30)
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(frames) >= 2
    assert frames[0]["remaining"] == 4 and frames[0]["eta_seconds"] is None and not frames[0]["settled"]
    assert frames[-1]["settled"] and frames[-1]["states"] == {"delivered": 4}
    assert frames[-1]["rate"]["per_second"]["sms"] > 0


def test_watch_for_people_shows_counts_rate_and_eta(cli_db: str) -> None:
    campaign_id = _campaign(cli_db, [("sms", "delivered", 2.0, 3)] * 5 + [("email", "failed", None, 0)])
    result = runner.invoke(app, ["campaign", "status", str(campaign_id), "--watch"])
    assert result.exit_code == 0, result.output
    assert f"campaign {campaign_id} [running] progress" in result.stdout
    assert "delivered" in result.stdout
    assert "rate (last 10 s): 0.5/s — sms 0.5/s (2 parts/s), email 0.0/s" in result.stdout
    assert "settled: nothing left to send" in result.stdout
    plain = runner.invoke(app, ["campaign", "status", str(campaign_id), "--json"])
    assert "rate" not in json.loads(plain.stdout)  # --json without --watch is unchanged


def test_campaign_run_polls_a_campaign_that_is_slow_to_count_less_often() -> None:
    """The poll cadence (1 s, 0.1 s for the last rows) unless counting the campaign took long:
    then at most STATUS_SHARE of the time goes to counting (a national campaign's count, seconds)."""
    from notifier.dispatch.loops import FINAL_POLL_SECONDS, POLL_SECONDS, _poll_seconds
    from notifier.dispatch.progress import STATUS_SHARE

    busy, last = {"queued": 50_000}, {"sent": 10}
    assert _poll_seconds(busy, None, counted_in=0.01) == POLL_SECONDS
    assert _poll_seconds(last, None, counted_in=0.005) == FINAL_POLL_SECONDS
    assert _poll_seconds(busy, None, counted_in=0.8) == 0.8 / STATUS_SHARE
    assert _poll_seconds(last, None, counted_in=0.8) == 0.8 / STATUS_SHARE
