"""The database drives the broker: ids reach it only after the rows are committed, and rows whose
broker message was lost are handed over again.

Two rules make `queued` rows impossible to strand:

- **Commit, then enqueue.** A worker that receives an id before the transaction that queued the
  row commits reads the row as it was (still `planned`) and drops the message: the row would stay
  `queued` for good. So every path commits first and calls `hand_over` afterwards.
- **Re-drive.** `notification.enqueued_at` says when a row was last handed to the broker. A row
  still `queued` `dispatch.requeue_after_seconds` later has no live message (Redis restarted
  without its data, the message ran out of retries, the broker was down when we enqueued) and
  `redrive_stale` hands it over again. A duplicate message is harmless: the claim is a
  compare-and-set, so a row is sent once however many messages name it.

`Availability` keeps the log of a dependency (the database, the broker) that goes away to one line
when it goes and one when it is back, so a process that waits out an outage says so without
flooding the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from notifier.db import session_scope
from notifier.models import Campaign, Notification, utcnow
from notifier.dispatch.outbox import in_flight
from notifier.dispatch.states import QUEUED

log = logging.getLogger(__name__)

CHUNK = 500  # ids per statement: never an unbounded IN list
REDRIVE_BATCH = 20_000  # at most this many rows per maintenance pass; the next pass takes the rest

Enqueue = Callable[[Sequence[int]], object]


def broker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the broker is not there right now" (Redis down or restarting)."""
    import dramatiq.errors

    errors: list[type[BaseException]] = [dramatiq.errors.BrokerConnectionError, ConnectionError, TimeoutError]
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(errors)


def outage_errors() -> tuple[type[BaseException], ...]:
    """Database or broker going away: waited out and retried, never the end of a process."""
    return (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, *broker_errors())


def mark_enqueued(session: Session, notification_ids: Sequence[int]) -> None:
    """Record, in bulk, that these rows are being handed to the broker now."""
    moment = utcnow()
    for start in range(0, len(notification_ids), CHUNK):
        session.execute(sa.update(Notification)
                        .where(Notification.id.in_(notification_ids[start:start + CHUNK]))
                        .values(enqueued_at=moment))


def hand_over(database_url: str, enqueue: Enqueue, notification_ids: Sequence[int], *,
              marked: bool = False, broker: "Availability | None" = None) -> int:
    """Hand committed `queued` rows to the broker, having recorded when (unless `marked`: the
    caller set `enqueued_at` in the transaction that queued them). A broker that is down loses
    nothing: the rows are re-driven once it is back. Returns how many ids the broker took."""
    ids = list(notification_ids)
    if not ids:
        return 0
    if not marked:
        with session_scope(database_url) as session:
            mark_enqueued(session, ids)
    try:
        enqueue(ids)
    except broker_errors() as exc:
        if broker is None:
            raise
        broker.failed(exc)
        return 0
    if broker is not None:
        broker.ok()
    return len(ids)


def keep_in_hand(session: Session, notification_ids: Sequence[int]) -> list[int]:
    """The ids still `queued` in campaigns not held (paused, cancelled), their `enqueued_at` set
    to now: "a live worker holds this row's message". Returns them, ascending.

    A worker calls it before it paces each chunk of a batch, with every id of the batch it has
    not sent yet, for two reasons. Pacing books the route's shared clock: a chunk whose rows were
    meanwhile sent through a duplicate message, or whose campaign was paused, would book seconds
    nobody uses (a paused batch kept pacing chunk after chunk and starved the resumed campaign).
    And a row waiting in a worker's hand for its turn is not lost: refreshing `enqueued_at` keeps
    `redrive_stale` from handing it to the broker again, which made two workers pace the same
    rows. Rows another transaction has locked (a claim in progress) are left to it, in id order
    as every bulk move locks, so this cannot deadlock with a claim."""
    ids = sorted(set(notification_ids))
    held = sa.select(Campaign.id).where(Campaign.state.in_(("paused", "cancelled")))
    moment = utcnow()
    return sorted(_stamp_enqueued(session, ids, Notification.campaign_id.notin_(held), moment))


def _stamp_enqueued(session: Session, ids: Sequence[int], condition: sa.ColumnElement[bool],
                    moment: datetime) -> list[int]:
    """Set `enqueued_at = moment` on the rows of `ids` still `queued` that meet `condition`, in
    chunks, locked in id order like every bulk move; a row another transaction holds is being
    claimed or kept in a worker's hand right now, so it is skipped, not lost. Returns the ids set."""
    stamped: list[int] = []
    for start in range(0, len(ids), CHUNK):
        chosen = (sa.select(Notification.id)
                  .where(Notification.id.in_(ids[start:start + CHUNK]), Notification.state == QUEUED, condition)
                  .order_by(Notification.id).with_for_update(skip_locked=True))
        stamped += session.execute(
            sa.update(Notification)
            .where(Notification.id.in_(chosen.scalar_subquery()), Notification.state == QUEUED)
            .values(enqueued_at=moment)
            .returning(Notification.id)
        ).scalars().all()
    return stamped


def let_go(session: Session, notification_ids: Sequence[int]) -> None:
    """Rows a worker gives back because their route is down: still `queued`, but no message will
    take them soon (theirs is delayed by `route_down_seconds`). Clearing `enqueued_at` makes
    `redrive_stale` hand them over at its next pass once the route is no longer known to be down,
    so rows bounced just after the route watch saw it come back do not wait out the delay."""
    ids = sorted(set(notification_ids))
    for start in range(0, len(ids), CHUNK):
        session.execute(sa.update(Notification)
                        .where(Notification.id.in_(ids[start:start + CHUNK]), Notification.state == QUEUED)
                        .values(enqueued_at=None))


def redrive_stale(session: Session, *, after_seconds: float, skip_channels: Collection[str] = (),
                  limit: int = REDRIVE_BATCH) -> list[int]:
    """`queued` rows of running campaigns last handed to the broker more than `after_seconds`
    ago (or never): their `enqueued_at` becomes now and their ids are returned, to be handed
    over once this transaction commits. Rows of `skip_channels` (routes known to be down) wait:
    the route watch hands them over when the route answers.

    One UPDATE per batch; concurrent callers (every worker runs maintenance) do not both take a
    row: the second re-checks `enqueued_at` after the first committed and finds it fresh."""
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    stale = (sa.select(Notification.id)
             .join(Campaign, Campaign.id == Notification.campaign_id)
             .where(in_flight(QUEUED), Campaign.state == "running",
                    sa.or_(Notification.enqueued_at.is_(None), Notification.enqueued_at <= cutoff))
             .order_by(Notification.id).limit(limit))
    if skip_channels:
        stale = stale.where(Notification.channel.notin_(list(skip_channels)))
    candidates = list(session.execute(stale).scalars())
    not_fresh = sa.or_(Notification.enqueued_at.is_(None), Notification.enqueued_at <= cutoff)
    moved = _stamp_enqueued(session, candidates, not_fresh, utcnow())
    if moved:
        log.warning("%d queued notification(s) handed to the broker again (given back while their route "
                    "was down, or no broker message for %.0fs)", len(moved), after_seconds)
    return moved


class Availability:
    """Whether a dependency (database, broker) answers, logged once when it stops and once when
    it answers again, with how long it was away."""

    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.down_since: float | None = None
        self._log = logger or log

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._log.warning("%s unreachable (%s); waiting for it and retrying", self.name, _reason(exc))

    def ok(self) -> None:
        if self.down_since is not None:
            self._log.warning("%s answers again after %.0fs; resuming", self.name, time.monotonic() - self.down_since)
            self.down_since = None


def _reason(exc: BaseException) -> str:
    """The error's class and first line, without SQL or parameters (they may name subscribers)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
