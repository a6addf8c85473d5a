"""Run a campaign to completion, and run a worker: the two loops that drive the outbox.

Embedded mode (`campaign run` without a broker URL): the in-process broker and worker threads
send, and this loop queues rows, runs maintenance and follows progress until every row is
settled. Production: `notifier worker` processes consume from Redis; `campaign run` queues rows
and follows. Both loops may stop at any moment: the database says what is left.

The broker learns of a row only after the transaction that queued it committed, and the
database re-drives the broker (`notifier.dispatch.redrive`): a `queued` row whose message was lost
is handed over again by maintenance. A database or broker that goes away is waited out, with one
log line when it goes and one when it is back; neither loop ends because of it.

A route that cannot be reached (SMSC or mail relay down) is not the messages' fault: the embedded
`campaign run` checks every route it needs before it queues anything and stops with one line if
one is down; if a route goes away during the run, it is a pause: its rows wait in `queued` (no
attempt counted), the route is probed with capped backoff, and sending resumes by itself when it
answers. Only after `dispatch.route_outage_max_seconds` (or the campaign's `ends_at`) does the run
stop, with one line; a later `campaign run` sends what is left, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import dramatiq
import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.dispatch.actors import declare_actors, enqueue_all, make_broker
from notifier.campaigns import HANDED_OVER_CHANNELS, campaign_status, get_campaign
from notifier.db import session_scope
from notifier.dispatch.delivery import HELD_CAMPAIGN_STATES
from notifier.errors import ConfigError, NotifierError, RouteUnreachableError
from notifier.models import Campaign, Notification, utcnow
from notifier.dispatch.outbox import in_flight, transition_many
from notifier.dispatch.states import PENDING_STATES, PLANNED, QUEUED, SENT
from notifier.dispatch.progress import poll_pause
from notifier.dispatch.recovery import run_maintenance
from notifier.dispatch.redrive import Availability, hand_over, mark_enqueued, outage_errors
from notifier.dispatch.runtime import Runtime, activate, deactivate, make_runtime
from notifier.dispatch.routes import RouteWatch, unreachable_message
from notifier.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # maintenance and progress once a second: counting a big campaign is not free
MAINTENANCE_SECONDS = 1.0
EMBEDDED_WORKER_TIMEOUT_MS = 20  # how long stopping the embedded worker waits for its threads' polls
FINAL_POLL_SECONDS = 0.1  # `campaign run` polls this often once at most FINAL_ROWS rows are left
FINAL_ROWS = 2000
# Rows queued (and handed to the broker) per transaction when a run starts: the workers start on
# the first chunk while the rest is queued, instead of after one transaction over every row.
QUEUE_CHUNK = 2000
T = TypeVar("T")
# Rows this loop queues and waits for: not those an export hands over (billing waits in `planned`).
_SENT_BY_WORKERS = Notification.channel.notin_(sorted(HANDED_OVER_CHANNELS))
ProgressCallback = Callable[[dict[str, object]], None]


class CampaignHalted(NotifierError):
    """Raised when `campaign run` stops because a route it needs cannot be reached: the rows it did
    not send stay `planned` / `queued`, and a later `campaign run` sends them."""


def queue_campaign(session: Session, campaign_id: int, *, include_queued: bool, limit: int | None = None) -> list[int]:
    """planned → queued for the campaign (the first `limit` planned rows by id, if given),
    recorded as handed to the broker now; with `include_queued`, also rows already queued (their
    broker messages may have died with an earlier process). The caller hands the ids to the
    broker only AFTER this session committed (`hand_over(..., marked=True)`): a worker reading the
    row earlier would find it `planned`."""
    planned = session.exec(select(Notification.id).where(
        Notification.campaign_id == campaign_id, Notification.state == PLANNED, _SENT_BY_WORKERS)
        .order_by(Notification.id).limit(limit)).all()
    now = utcnow()
    ids = transition_many(session, planned, expected=PLANNED, to_state=QUEUED, source="dispatcher",
                          values={"queued_at": now, "enqueued_at": now})
    if include_queued:
        moved = set(ids)
        waiting = [nid for nid in session.exec(select(Notification.id).where(
            Notification.campaign_id == campaign_id, Notification.state == QUEUED)).all() if nid not in moved]
        mark_enqueued(session, waiting)
        ids += waiting
    return ids


def run_campaign(settings: Settings, campaign_id: int, on_progress: ProgressCallback | None = None) -> dict[str, object]:
    """Drive one campaign until no row needs work and receipts are in (or stopped waiting), or
    until an operator pauses or cancels it. Running a paused campaign resumes it.

    Embedded mode raises CampaignHalted, having changed nothing, when a route the campaign still
    needs cannot be reached at the start. A route lost during the run is a pause: rows wait in
    `queued` and sending resumes when it answers; only when it stays unreachable for
    `dispatch.route_outage_max_seconds` (or past the campaign's `ends_at`) is the campaign paused
    and CampaignHalted raised. (With a broker the workers send, so the routes
    that matter are theirs: `notifier worker` holds messages while a route is down.)
    """
    settings.check_secrets()
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "cancelled":
            return campaign_status(session, campaign_id)
        channels = [name for name in campaign.channel_list if name not in HANDED_OVER_CHANNELS]
        ends_at = campaign.ends_at
        needed = channels_with_work(session, campaign_id, channels)
    broker = make_broker(settings)
    actor = declare_actors(broker, settings)
    runtime = open_checked_runtime(settings, channels, needed) if settings.embedded else None
    try:
        with _embedded_worker(settings, broker, runtime):
            _mark_running(settings, campaign_id)
            watch = RouteWatch(runtime, channels) if runtime is not None else None
            status = _follow(settings, campaign_id, actor, on_progress, watch, ends_at)
    except _RouteLost as lost:
        raise _halt(settings, campaign_id, lost.outages) from None
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "running":
            campaign.state, campaign.finished_at = "done", utcnow()
        status = campaign_status(session, campaign_id)
    if on_progress:
        on_progress(status)
    return status


def channels_with_work(session: Session, campaign_id: int, channels: list[str]) -> list[str]:
    """The campaign's channels that still have rows to send (planned, queued, unknown…), in order."""
    busy = set(session.exec(select(Notification.channel).where(
        Notification.campaign_id == campaign_id, Notification.state.in_(PENDING_STATES)).distinct()).all())
    return [name for name in channels if name in busy]


def queued_ids(session: Session, *, channel: str, campaign_id: int | None = None) -> list[int]:
    """`queued` rows on `channel` in running campaigns (or in one of them)."""
    query = (select(Notification.id).join(Campaign, Campaign.id == Notification.campaign_id)
             .where(in_flight(QUEUED), Notification.channel == channel, Campaign.state == "running"))
    if campaign_id is not None:
        query = query.where(Notification.campaign_id == campaign_id)
    return list(session.exec(query).all())


def open_checked_runtime(settings: Settings, channels: list[str], must_reach: list[str]) -> Runtime:
    """A runtime with every channel of the campaign open (an SMPP bind brings the receipts the SMSC
    kept for us), once each channel in `must_reach` proved it can reach its provider; otherwise
    CampaignHalted, before anything was queued."""
    runtime = make_runtime(settings)
    try:
        for name in channels:
            runtime.channel(name)
        failures = []
        for name in must_reach:
            try:
                runtime.channel(name).check()
            except RouteUnreachableError as exc:
                failures.append(exc)
        if failures:
            raise CampaignHalted(unreachable_message(failures, "nothing was sent"))
    except BaseException:
        runtime.close()
        raise
    return runtime


def _mark_running(settings: Settings, campaign_id: int) -> None:
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        campaign.state, campaign.finished_at = "running", None
        campaign.started_at = campaign.started_at or utcnow()


class _RouteLost(Exception):
    """Internal: a route with rows still to send stayed down too long; carries (error, seconds)."""

    def __init__(self, outages: list[tuple[RouteUnreachableError, float]]) -> None:
        super().__init__("route lost")
        self.outages = outages


class _Outages:
    """The database and the broker as seen by one loop: each logs once when it goes, once when back."""

    def __init__(self, database_url: str) -> None:
        from notifier.db import shown_url

        self.database = Availability(f"the database {shown_url(database_url)}", log)
        self.broker = Availability("the broker (Redis)", log)


def _watch_routes(settings: Settings, campaign_id: int, actor: dramatiq.Actor, watch: RouteWatch,
                  status: dict[str, object], outages: _Outages, ends_at: datetime | None) -> None:
    """Hand over the rows of a route that came back (their broker messages may have run out of
    retries meanwhile; a duplicate is harmless), and give up on a route that has rows to send and
    has been down for `route_outage_max_seconds` or past the campaign's end. Only routes with rows
    still to send are checked."""
    by_channel: dict[str, dict[str, int]] = status["by_channel"]  # type: ignore[assignment]
    busy = [name for name, counts in by_channel.items() if any(counts.get(state) for state in PENDING_STATES)]
    for channel in watch.poll(set(busy) | set(watch.down)):
        with session_scope(settings.database_url) as session:
            ids = queued_ids(session, channel=channel, campaign_id=campaign_id)
        hand_over(settings.database_url, lambda batch: enqueue_all(actor, batch), ids, broker=outages.broker)
    lost = watch.lasting(busy, _outage_allowance(settings, ends_at))
    if lost:
        raise _RouteLost(lost)


def _outage_allowance(settings: Settings, ends_at: datetime | None) -> float:
    """How long a route may stay down before the run gives up: `route_outage_max_seconds`, or
    less when the campaign's `ends_at` comes sooner (0 once it has passed)."""
    allowance = settings.dispatch.route_outage_max_seconds
    if ends_at is not None:
        allowance = min(allowance, max(0.0, (ends_at - utcnow()).total_seconds()))
    return allowance


def _halt(settings: Settings, campaign_id: int, lost: list[tuple[RouteUnreachableError, float]]) -> CampaignHalted:
    """Pause the campaign (its rows stay where they are) and say so in one line."""
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "running":
            campaign.state = "paused"
        waiting = session.exec(select(sa.func.count()).select_from(Notification).where(
            Notification.campaign_id == campaign_id, Notification.state.in_(PENDING_STATES), _SENT_BY_WORKERS)).one()
    outcome = (f"campaign {campaign_id} paused with {waiting} notification(s) not sent yet "
               f"(`notifier campaign run {campaign_id}` sends them)")
    return CampaignHalted(unreachable_message([error for error, _ in lost], outcome,
                                              lasting=max(seconds for _, seconds in lost)))


def _follow(settings: Settings, campaign_id: int, actor: dramatiq.Actor,
            on_progress: ProgressCallback | None, watch: RouteWatch | None,
            ends_at: datetime | None = None) -> dict[str, object]:
    """Queue the campaign (commit, then enqueue), then once a second: maintenance, progress,
    route watch, until nothing is pending and receipts are in, or an operator holds it.
    A database or broker outage is waited out (logged once each way), never the end of the run."""
    outages = _Outages(settings.database_url)
    enqueue = lambda ids: enqueue_all(actor, ids)  # noqa: E731
    first, more = True, True
    while more:  # the workers start on the first chunk while the rest is queued
        queued, more = _until_database_answers(settings, outages,
                                               lambda first=first: _queue(settings, campaign_id, first=first))
        hand_over(settings.database_url, enqueue, queued, marked=True, broker=outages.broker)
        first = False
    settled_since: float | None = None
    maintained_at: float | None = None
    while True:
        # Maintenance once a second even while the last rows are polled ten times a second: a
        # pass reads every `sending`, `unknown` and stale `queued` row, and the workers run theirs.
        maintain = maintained_at is None or time.monotonic() - maintained_at >= MAINTENANCE_SECONDS
        if maintain:
            maintained_at = time.monotonic()
        status, counted_in = _pass(settings, campaign_id, enqueue, watch, outages, maintain=maintain)
        if status is None:  # the database is away: wait for it
            time.sleep(POLL_SECONDS)
            continue
        if on_progress:
            on_progress(status)
        if status["state"] in HELD_CAMPAIGN_STATES:
            log.warning("[campaign:%s] %s by an operator: stopping here", campaign_id, status["state"])
            return status
        status = without_handed_over(status)
        if watch is not None:
            try:
                _watch_routes(settings, campaign_id, actor, watch, status, outages, ends_at)
            except outage_errors() as exc:
                outages.database.failed(exc)
        states: dict[str, int] = status["states"]  # type: ignore[assignment]
        if any(states.get(state) for state in PENDING_STATES):
            settled_since = None
        else:
            settled_since = settled_since or time.monotonic()
            waited = time.monotonic() - settled_since
            if not states.get(SENT) or waited >= settings.dispatch.receipt_wait_seconds:
                if watch is not None:
                    watch.poll(watch.down, force=True)  # close the log of an outage that ended
                return status
        time.sleep(_poll_seconds(states, watch, counted_in=counted_in))


def without_handed_over(status: dict[str, object]) -> dict[str, object]:
    """The campaign's status as this loop follows it: rows of channels an export hands over
    (billing) wait in `planned` for `notifier billing export`, so they are neither sent nor waited for."""
    by_channel = {name: counts for name, counts in status["by_channel"].items()  # type: ignore[attr-defined]
                  if name not in HANDED_OVER_CHANNELS}
    states: dict[str, int] = {}
    for counts in by_channel.values():
        for state, count in counts.items():
            states[state] = states.get(state, 0) + count
    return {**status, "by_channel": by_channel, "states": states}


def _poll_seconds(states: dict[str, int], watch: RouteWatch | None, *, counted_in: float = 0.0) -> float:
    """Once a second while much is left or a route is down; ten times a second for the last rows
    and receipts, so the run ends within ~0.1 s of its last receipt, not up to a second later;
    less often when counting the campaign took long (`progress.poll_pause`)."""
    left = sum(states.get(state, 0) for state in PENDING_STATES) + states.get(SENT, 0)
    route_down = watch is not None and bool(watch.down)
    return poll_pause(FINAL_POLL_SECONDS if left <= FINAL_ROWS and not route_down else POLL_SECONDS, counted_in)


def _queue(settings: Settings, campaign_id: int, *, first: bool) -> tuple[list[int], bool]:
    """One transaction: the next QUEUE_CHUNK planned rows queued (on the `first` call, with the
    rows an earlier run left queued); the ids, and whether planned rows remain."""
    with session_scope(settings.database_url) as session:
        ids = queue_campaign(session, campaign_id, include_queued=first, limit=QUEUE_CHUNK)
        more = session.exec(select(Notification.id).where(
            Notification.campaign_id == campaign_id, Notification.state == PLANNED,
            _SENT_BY_WORKERS).limit(1)).first() is not None
    return ids, more


def _until_database_answers(settings: Settings, outages: _Outages, step: Callable[[], T]) -> T:
    """Run `step` until the database lets it: an outage at the start of a run is waited out too."""
    while True:
        try:
            result = step()
        except outage_errors() as exc:
            outages.database.failed(exc)
            time.sleep(POLL_SECONDS)
            continue
        outages.database.ok()
        return result


def _pass(settings: Settings, campaign_id: int, enqueue: Callable[[list[int]], object],
          watch: RouteWatch | None, outages: _Outages, *, maintain: bool) -> tuple[dict[str, object] | None, float]:
    """Maintenance (when `maintain`) and the campaign's status, and how long the status took to
    count; None while the database does not answer."""
    if maintain:
        run_maintenance(settings, enqueue, skip_channels=watch.down if watch else (),
                        database=outages.database, broker=outages.broker)
    began = time.monotonic()
    try:
        with session_scope(settings.database_url) as session:
            status = campaign_status(session, campaign_id)
    except outage_errors() as exc:
        outages.database.failed(exc)
        return None, 0.0
    outages.database.ok()
    return status, time.monotonic() - began


class _embedded_worker:
    """In embedded mode: dramatiq worker threads in this process sending through `runtime` (its
    channels already open); the runtime is closed on the way out. Nothing to do without one."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, runtime: Runtime | None) -> None:
        self.settings, self.broker, self.runtime = settings, broker, runtime
        self.worker: dramatiq.Worker | None = None

    def __enter__(self) -> "_embedded_worker":
        if self.runtime is None:
            return self
        activate(self.runtime)
        # A short worker timeout: stopping waits for each consumer's poll (dramatiq's default,
        # 1 s, added a second to the end of every `campaign run`).
        self.worker = dramatiq.Worker(self.broker, worker_threads=self.settings.dispatch.worker_threads,
                                      worker_timeout=EMBEDDED_WORKER_TIMEOUT_MS)
        self.worker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.runtime is not None:
            self.runtime.close()
            deactivate()


def run_worker(settings: Settings, stop: threading.Event, *, channels: list[str], threads: int | None = None) -> None:
    """A `notifier worker`: consume from the Redis broker until `stop` is set; run maintenance too.

    The worker outlives Redis and the database going away: dramatiq's consumer reconnects by
    itself, maintenance skips what it cannot do (logged once each way), and rows whose messages
    were lost meanwhile are re-driven from the database."""
    settings.check_secrets()
    if settings.embedded:
        raise ConfigError("notifier worker needs a broker: set NOTIFIER_BROKER_URL=redis://… "
                          "(in embedded mode `campaign run` sends by itself)")
    broker = make_broker(settings)
    actor = declare_actors(broker, settings)
    channels = [name for name in channels if name not in HANDED_OVER_CHANNELS]  # billing: exported, not sent
    runtime = make_runtime(settings)
    activate(runtime)
    for name in channels:
        runtime.channel(name)
    worker = dramatiq.Worker(broker, worker_threads=threads or settings.dispatch.worker_threads)
    worker.start()
    log.info("worker %s started: %d thread(s), channels %s", runtime.owner, worker.worker_threads, ",".join(channels))
    watch = RouteWatch(runtime, channels)
    outages = _Outages(settings.database_url)
    try:
        while not stop.wait(MAINTENANCE_SECONDS):
            _worker_pass(settings, actor, watch, outages)
    finally:
        worker.stop()
        runtime.close()
        deactivate()
        broker.close()
        log.info("worker %s stopped", runtime.owner)


def _worker_pass(settings: Settings, actor: dramatiq.Actor, watch: RouteWatch, outages: _Outages) -> None:
    """Maintenance, then hand over the rows of routes that came back (messages bounced during the
    outage may have run out of retries). Nothing here may end the worker: an error that is not an
    outage is logged with its traceback and the next pass tries again."""
    enqueue = lambda ids: enqueue_all(actor, ids)  # noqa: E731
    try:
        run_maintenance(settings, enqueue, skip_channels=watch.down, database=outages.database,
                        broker=outages.broker)
        for channel in watch.poll():
            with session_scope(settings.database_url) as session:
                ids = queued_ids(session, channel=channel)
            hand_over(settings.database_url, enqueue, ids, broker=outages.broker)
    except outage_errors() as exc:
        outages.database.failed(exc)
    except Exception:  # noqa: BLE001 - a worker must keep serving; the traceback says what to fix
        log.exception("worker maintenance failed; trying again in %.0fs", MAINTENANCE_SECONDS)
