"""Broker set-up and the dramatiq actor. The broker carries batches of notification ids, nothing else.

Nothing happens at import time: `make_broker` picks the Redis broker when `broker_url` is set and
an in-process `StubBroker` otherwise, and `declare_actors` binds the actor to that broker. One
message names up to `BATCH_SIZE` rows: the worker claims, sends and records them together, and a
message delivered twice (or two workers given the same ids) still sends each row once, because
the claim is a compare-and-set on the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import dramatiq
from dramatiq.brokers.stub import StubBroker

from notifier.dispatch.delivery import deliver_batch
from notifier.dispatch.runtime import current_runtime
from notifier.settings import Settings

QUEUE_NAME = "notifications"
ACTOR_NAME = "send_notifications"
BATCH_SIZE = 100  # ids per broker message: one claim, one send window's worth, one record
# A batch is paced in ~1-second chunks; at the lowest sane rates 100 rows still end well inside this.
SEND_TIME_LIMIT_MS = 600_000


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Redis in production, an in-memory broker in embedded mode (the database is the durable part)."""
    if not settings.broker_url:
        broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=settings.broker_url, namespace=settings.broker_namespace)


def declare_actors(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor:
    """Bind the batch actor to `broker`. Rows that must wait (a retryable refusal, a route down)
    go back to the broker as a new, delayed batch; the rows' `attempts` column decides when to
    give up, never a counter in the broker."""
    actor: dramatiq.Actor | None = None

    def send_notifications(notification_ids: list[int] | int) -> None:
        """Actor body: deliver a batch; what must wait is re-sent with its delay."""
        ids = [notification_ids] if isinstance(notification_ids, int) else list(notification_ids)
        report = deliver_batch(current_runtime(), ids)
        for delay_ms, waiting in sorted(report.retry.items()):
            for chunk in _chunks(waiting, BATCH_SIZE):
                actor.send_with_options(args=(chunk,), delay=delay_ms)  # type: ignore[union-attr]

    actor = dramatiq.actor(
        send_notifications,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        max_retries=settings.dispatch.max_retries + 2,
        time_limit=SEND_TIME_LIMIT_MS,
    )
    return actor


def enqueue_all(actor: dramatiq.Actor, notification_ids: Iterable[int], *, batch_size: int = BATCH_SIZE) -> int:
    """Hand ids to the broker, one message per `batch_size` of them (call it after the commit that
    queued them); returns how many ids. A duplicate is harmless: the claim is a compare-and-set."""
    count = 0
    for chunk in _chunks(notification_ids, batch_size):
        actor.send(chunk)
        count += len(chunk)
    return count


def _chunks(ids: Iterable[int], size: int) -> Iterable[list[int]]:
    iterator = iter(ids)
    while chunk := [int(nid) for nid in islice(iterator, size)]:
        yield chunk
