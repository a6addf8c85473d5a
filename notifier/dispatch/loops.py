"""Run a campaign to completion, and run a worker: the two loops that drive the outbox.

Embedded mode (`campaign run` without a broker URL): the in-process broker and worker threads
send, and this loop queues rows, runs maintenance and follows progress until every row is
settled. Production: `notifier worker` processes consume from Redis; `campaign run` queues rows
and follows. Both loops may stop at any moment: the database says what is left.

A route that cannot be reached (SMSC or mail relay down) is not the messages' fault: the embedded
`campaign run` checks every route it needs before it queues anything and stops with one line if
one is down; if a route goes away during the run, its rows wait in `queued` (no attempt counted),
and the run stops after `dispatch.route_down_seconds` unless the route comes back. A later
`campaign run` sends what is left, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dramatiq
import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.dispatch.actors import declare_actors, enqueue_all, make_broker
from notifier.campaigns import campaign_status, get_campaign
from notifier.db import session_scope
from notifier.dispatch.delivery import HELD_CAMPAIGN_STATES
from notifier.errors import ConfigError, NotifierError, RouteUnreachableError
from notifier.models import Campaign, Notification, utcnow
from notifier.dispatch.outbox import PENDING_STATES, PLANNED, QUEUED, SENT, transition_many
from notifier.dispatch.recovery import run_maintenance
from notifier.dispatch.runtime import Runtime, activate, deactivate, make_runtime
from notifier.dispatch.routes import RouteWatch, unreachable_message
from notifier.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # maintenance and progress once a second: counting a big campaign is not free
MAINTENANCE_SECONDS = 1.0
ProgressCallback = Callable[[dict[str, object]], None]


class CampaignHalted(NotifierError):
    """Raised when `campaign run` stops because a route it needs cannot be reached: the rows it did
    not send stay `planned` / `queued`, and a later `campaign run` sends them."""


def queue_campaign(session: Session, campaign_id: int, *, include_queued: bool) -> list[int]:
    """planned → queued for the campaign; with `include_queued`, also rows already queued
    (their broker messages may have died with an earlier process)."""
    planned = session.exec(select(Notification.id).where(
        Notification.campaign_id == campaign_id, Notification.state == PLANNED)).all()
    ids = transition_many(session, planned, expected=PLANNED, to_state=QUEUED, source="dispatcher",
                          values={"queued_at": utcnow()})
    if include_queued:
        moved = set(ids)
        ids += [nid for nid in session.exec(select(Notification.id).where(
            Notification.campaign_id == campaign_id, Notification.state == QUEUED)).all() if nid not in moved]
    return ids


def run_campaign(settings: Settings, campaign_id: int, on_progress: ProgressCallback | None = None) -> dict[str, object]:
    """Drive one campaign until no row needs work and receipts are in (or stopped waiting), or
    until an operator pauses or cancels it. Running a paused campaign resumes it.

    Embedded mode raises CampaignHalted, having changed nothing, when a route the campaign still
    needs cannot be reached; and, having paused the campaign, when one stays unreachable for
    `dispatch.route_down_seconds` during the run. (With a broker the workers send, so the routes
    that matter are theirs: `notifier worker` holds messages while a route is down.)
    """
    settings.check_secrets()
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "cancelled":
            return campaign_status(session, campaign_id)
        channels = campaign.channel_list
        needed = channels_with_work(session, campaign_id, channels)
    broker = make_broker(settings)
    actor = declare_actors(broker, settings)
    runtime = open_checked_runtime(settings, channels, needed) if settings.embedded else None
    try:
        with _embedded_worker(settings, broker, runtime):
            _mark_running(settings, campaign_id)
            watch = RouteWatch(runtime, channels) if runtime is not None else None
            status = _follow(settings, campaign_id, actor, on_progress, watch)
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
             .where(Notification.state == QUEUED, Notification.channel == channel, Campaign.state == "running"))
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


def _watch_routes(settings: Settings, campaign_id: int, actor: dramatiq.Actor, watch: RouteWatch,
                  status: dict[str, object]) -> None:
    """Re-queue the rows of a route that came back (their broker messages may have run out of
    retries meanwhile; a duplicate is harmless), and give up on a route that has rows to send and
    has been down for `route_down_seconds`. Only routes with rows still to send are checked."""
    by_channel: dict[str, dict[str, int]] = status["by_channel"]  # type: ignore[assignment]
    busy = [name for name, counts in by_channel.items() if any(counts.get(state) for state in PENDING_STATES)]
    for channel in watch.poll(busy):
        with session_scope(settings.database_url) as session:
            enqueue_all(actor, queued_ids(session, channel=channel, campaign_id=campaign_id))
    lost = watch.lasting(busy, settings.dispatch.route_down_seconds)
    if lost:
        raise _RouteLost(lost)


def _halt(settings: Settings, campaign_id: int, lost: list[tuple[RouteUnreachableError, float]]) -> CampaignHalted:
    """Pause the campaign (its rows stay where they are) and say so in one line."""
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "running":
            campaign.state = "paused"
        waiting = session.exec(select(sa.func.count()).select_from(Notification).where(
            Notification.campaign_id == campaign_id, Notification.state.in_(PENDING_STATES))).one()
    outcome = (f"campaign {campaign_id} paused with {waiting} notification(s) not sent yet "
               f"(`notifier campaign run {campaign_id}` sends them)")
    return CampaignHalted(unreachable_message([error for error, _ in lost], outcome,
                                              lasting=max(seconds for _, seconds in lost)))


def _follow(settings: Settings, campaign_id: int, actor: dramatiq.Actor,
            on_progress: ProgressCallback | None, watch: RouteWatch | None) -> dict[str, object]:
    with session_scope(settings.database_url) as session:
        enqueue_all(actor, queue_campaign(session, campaign_id, include_queued=True))
    settled_since: float | None = None
    while True:
        run_maintenance(settings, lambda ids: enqueue_all(actor, ids))
        with session_scope(settings.database_url) as session:
            status = campaign_status(session, campaign_id)
        if on_progress:
            on_progress(status)
        if status["state"] in HELD_CAMPAIGN_STATES:
            log.warning("[campaign:%s] %s by an operator: stopping here", campaign_id, status["state"])
            return status
        if watch is not None:
            _watch_routes(settings, campaign_id, actor, watch, status)
        states: dict[str, int] = status["states"]  # type: ignore[assignment]
        if any(states.get(state) for state in PENDING_STATES):
            settled_since = None
        else:
            settled_since = settled_since or time.monotonic()
            waited = time.monotonic() - settled_since
            if not states.get(SENT) or waited >= settings.dispatch.receipt_wait_seconds:
                return status
        time.sleep(POLL_SECONDS)


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
        self.worker = dramatiq.Worker(self.broker, worker_threads=self.settings.dispatch.worker_threads)
        self.worker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.runtime is not None:
            self.runtime.close()
            deactivate()


def run_worker(settings: Settings, stop: threading.Event, *, channels: list[str], threads: int | None = None) -> None:
    """A `notifier worker`: consume from the Redis broker until `stop` is set; run maintenance too."""
    settings.check_secrets()
    if settings.embedded:
        raise ConfigError("notifier worker needs a broker: set NOTIFIER_BROKER_URL=redis://… "
                          "(in embedded mode `campaign run` sends by itself)")
    broker = make_broker(settings)
    actor = declare_actors(broker, settings)
    runtime = make_runtime(settings)
    activate(runtime)
    for name in channels:
        runtime.channel(name)
    worker = dramatiq.Worker(broker, worker_threads=threads or settings.dispatch.worker_threads)
    worker.start()
    log.info("worker %s started: %d thread(s), channels %s", runtime.owner, worker.worker_threads, ",".join(channels))
    watch = RouteWatch(runtime, channels)
    try:
        while not stop.wait(MAINTENANCE_SECONDS):
            run_maintenance(settings, lambda ids: enqueue_all(actor, ids))
            for channel in watch.poll():  # messages bounced during the outage may have run out of retries
                with session_scope(settings.database_url) as session:
                    enqueue_all(actor, queued_ids(session, channel=channel))
    finally:
        worker.stop()
        runtime.close()
        deactivate()
        broker.close()
        log.info("worker %s stopped", runtime.owner)
