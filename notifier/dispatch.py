"""Run a campaign to completion, and run a worker: the two loops that drive the outbox.

Embedded mode (`campaign run` without a broker URL): the in-process broker and worker threads
send, and this loop queues rows, runs maintenance and follows progress until every row is
settled. Production: `notifier worker` processes consume from Redis; `campaign run` queues rows
and follows. Both loops may stop at any moment: the database says what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dramatiq
from sqlmodel import Session, select

from notifier.actors import declare_actors, enqueue_all, make_broker
from notifier.campaigns import campaign_status, get_campaign
from notifier.db import session_scope
from notifier.delivery import HELD_CAMPAIGN_STATES
from notifier.errors import ConfigError
from notifier.models import Notification, utcnow
from notifier.outbox import PENDING_STATES, PLANNED, QUEUED, SENT, transition_many
from notifier.recovery import run_maintenance
from notifier.runtime import activate, deactivate, make_runtime
from notifier.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # maintenance and progress once a second: counting a big campaign is not free
MAINTENANCE_SECONDS = 1.0
ProgressCallback = Callable[[dict[str, object]], None]


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
    until an operator pauses or cancels it. Running a paused campaign resumes it."""
    settings.check_secrets()
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "cancelled":
            return campaign_status(session, campaign_id)
        channels = campaign.channel_list
        campaign.state, campaign.finished_at = "running", None
        campaign.started_at = campaign.started_at or utcnow()
    broker = make_broker(settings)
    actor = declare_actors(broker, settings)
    with _embedded_worker(settings, broker, channels):
        status = _follow(settings, campaign_id, actor, on_progress)
    with session_scope(settings.database_url) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.state == "running":
            campaign.state, campaign.finished_at = "done", utcnow()
        status = campaign_status(session, campaign_id)
    if on_progress:
        on_progress(status)
    return status


def _follow(settings: Settings, campaign_id: int, actor: dramatiq.Actor,
            on_progress: ProgressCallback | None) -> dict[str, object]:
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
    """In embedded mode: a runtime with open channels and dramatiq worker threads in this process."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, channels: list[str]) -> None:
        self.settings, self.broker, self.channels = settings, broker, channels
        self.worker: dramatiq.Worker | None = None
        self.runtime = None

    def __enter__(self) -> "_embedded_worker":
        if not self.settings.embedded:
            return self
        self.runtime = make_runtime(self.settings)
        activate(self.runtime)
        for name in self.channels:  # bind now: receipts held for an earlier session arrive on bind
            self.runtime.channel(name)
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
    try:
        while not stop.wait(MAINTENANCE_SECONDS):
            run_maintenance(settings, lambda ids: enqueue_all(actor, ids))
    finally:
        worker.stop()
        runtime.close()
        deactivate()
        broker.close()
        log.info("worker %s stopped", runtime.owner)
