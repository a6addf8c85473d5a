"""Broker set-up and the dramatiq actor. The broker carries notification ids, nothing else.

Nothing happens at import time: `make_broker` picks the Redis broker when `broker_url` is set and
an in-process `StubBroker` otherwise, and `declare_actors` binds the actor to that broker.
"""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.stub import StubBroker

from notifier.dispatch.delivery import RetryLater, deliver
from notifier.dispatch.runtime import current_runtime
from notifier.settings import Settings

QUEUE_NAME = "notifications"
SEND_TIME_LIMIT_MS = 120_000


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Redis in production, an in-memory broker in embedded mode (the database is the durable part)."""
    if not settings.broker_url:
        broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=settings.broker_url, namespace=settings.broker_namespace)


def send_notification(notification_id: int) -> None:
    """Actor body: deliver one notification; a transient error comes back through the broker."""
    try:
        deliver(current_runtime(), notification_id)
    except RetryLater as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from exc


def declare_actors(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor:
    """Bind `send_notification` to `broker`. The row's `attempts` column, not the broker, decides
    when to give up, so the broker's retry budget is just above ours."""
    return dramatiq.actor(
        send_notification,
        broker=broker,
        actor_name="send_notification",
        queue_name=QUEUE_NAME,
        max_retries=settings.dispatch.max_retries + 2,
        time_limit=SEND_TIME_LIMIT_MS,
    )


def enqueue_all(actor: dramatiq.Actor, notification_ids: Iterable[int]) -> int:
    """Send one message per id; a duplicate message is harmless (the claim is a compare-and-set)."""
    count = 0
    for notification_id in notification_ids:
        actor.send(notification_id)
        count += 1
    return count
