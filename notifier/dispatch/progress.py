"""How far a campaign has got and how fast it goes: what `notifier campaign status ID --watch` shows.

Two grouped queries per refresh, whatever the campaign's size: the counts per channel × state
(`campaigns.campaign_status`) and, per channel, the notifications (and SMS parts) whose `sent_at`
falls in the last `RATE_WINDOW_SECONDS`. The ETA divides what is still to send by that rate: the
route's pace as it is now (a throttled or paused route shows it), not an average since the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.campaigns import campaign_status
from notifier.dispatch.states import PENDING_STATES, SENT
from notifier.models import Notification, utcnow

RATE_WINDOW_SECONDS = 10.0
SETTLED_CAMPAIGN_STATES = frozenset({"done", "cancelled"})


@dataclass(frozen=True)
class Progress:
    """One refresh: the `campaign status --json` document plus rate, what is left and the ETA."""

    status: dict[str, object]
    per_second: dict[str, float]  # notifications handed to the provider per second, by channel
    sms_parts_per_second: float
    window_seconds: float  # what the rates were measured over (shorter just after the start)
    remaining: int  # rows still to send: planned, scheduled, queued, sending, unknown
    eta_seconds: float | None  # None: nothing is moving (not started, paused, route down)
    settled: bool  # nothing left to send and no receipt awaited, or the campaign is done/cancelled

    @property
    def total_per_second(self) -> float:
        return sum(self.per_second.values())

    def as_json(self) -> dict[str, object]:
        return {**self.status, "rate": {"window_seconds": round(self.window_seconds, 1),
                                        "per_second": {k: round(v, 2) for k, v in self.per_second.items()},
                                        "sms_parts_per_second": round(self.sms_parts_per_second, 2)},
                "remaining": self.remaining,
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
                "settled": self.settled}


# The share of the time a poller (`campaign run`, `campaign status --watch`) may spend counting a
# campaign's rows: a count that took 0.5 s (millions of rows) is repeated every 5 s, not every second.
STATUS_SHARE = 0.1


def poll_pause(cadence: float, counted_in: float) -> float:
    """Seconds to wait before counting again: `cadence`, or longer when the last count took long
    (counting a campaign of millions of rows by state takes the database a while, and polling it as
    often as a small one would keep a core busy)."""
    return max(cadence, counted_in / STATUS_SHARE)


def campaign_progress(session: Session, campaign_id: int, *, now: datetime | None = None,
                      window_seconds: float = RATE_WINDOW_SECONDS) -> Progress:
    """Counts, the rate over the last `window_seconds` and the ETA of campaign `campaign_id`."""
    status = campaign_status(session, campaign_id)
    now = now or utcnow()
    window = _effective_window(status, now, window_seconds)
    sent, parts = _sent_since(session, campaign_id, now - timedelta(seconds=window), now)
    per_second = {channel: sent.get(channel, 0) / window for channel in status["by_channel"]}  # type: ignore[union-attr]
    states: dict[str, int] = status["states"]  # type: ignore[assignment]
    remaining = sum(count for state, count in states.items() if state in PENDING_STATES)
    rate = sum(per_second.values())
    eta = remaining / rate if rate > 0 and remaining else (0.0 if not remaining else None)
    settled = status["state"] in SETTLED_CAMPAIGN_STATES or (not remaining and not states.get(SENT))
    return Progress(status=status, per_second=per_second, sms_parts_per_second=parts / window,
                    window_seconds=window, remaining=remaining, eta_seconds=eta, settled=settled)


def _effective_window(status: dict[str, object], now: datetime, window_seconds: float) -> float:
    """The rate window, cut to the time since the campaign started (a run 3 s old is not averaged
    over 10 s), but never under one second."""
    started = status.get("started_at")
    if isinstance(started, str):
        elapsed = (now - datetime.fromisoformat(started)).total_seconds()
        return max(1.0, min(window_seconds, elapsed))
    return window_seconds


def _sent_since(session: Session, campaign_id: int, since: datetime, until: datetime
                ) -> tuple[dict[str, int], int]:
    """Per channel, the rows sent in (since, until], and the SMS parts among them: one query."""
    rows = session.exec(
        select(Notification.channel, sa.func.count(), sa.func.sum(sa.func.coalesce(Notification.parts, 1)))
        .where(Notification.campaign_id == campaign_id, Notification.sent_at > since, Notification.sent_at <= until)
        .group_by(Notification.channel)
    ).all()
    sent = {channel: int(count) for channel, count, _ in rows}
    parts = sum(int(total or 0) for channel, _, total in rows if channel == "sms")
    return sent, parts


def describe_rate(progress: Progress) -> str:
    """`rate (last 10 s): 48.0/s — sms 40.0/s (80 parts/s), email 8.0/s`, for people."""
    by_channel = ", ".join(
        f"{channel} {rate:.1f}/s" + (f" ({progress.sms_parts_per_second:.0f} parts/s)" if channel == "sms" else "")
        for channel, rate in progress.per_second.items())
    return f"rate (last {progress.window_seconds:.0f} s): {progress.total_per_second:.1f}/s — {by_channel}"


def describe_eta(progress: Progress) -> str:
    """`1,234 left, ETA 4 min 10 s`; `nothing moving` when the rate is zero with rows left."""
    if progress.settled:
        return "settled: nothing left to send"
    if progress.eta_seconds is None:
        return f"{progress.remaining:,} left, nothing moving (not running, paused or the route is down)"
    return f"{progress.remaining:,} left, ETA {format_duration(progress.eta_seconds)}"


def format_duration(seconds: float) -> str:
    """`45 s`, `4 min 10 s`, `2 h 05 min`."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
