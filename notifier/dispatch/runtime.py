"""What a sending process holds: settings, the renderer, open channels and their pacing.

One `Runtime` per process (the embedded `campaign run` or a `notifier worker`). Actors reach it
through `current_runtime()`, set by `activate()` when the process starts sending.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from channels.base import Channel, Receipt
from notifier.db import session_scope
from notifier.errors import ConfigError, InputError
from notifier.models import utcnow
from notifier.dispatch.ratelimit import GrantLog, RateLimiter, TokenBucket
from notifier.rendering import Renderer
from notifier.settings import Settings

log = logging.getLogger(__name__)

# Channels whose provider reports later (receipts stored in the database): a sending process
# applies them as they come (SMPP through its own bind; Twilio's through `notifier web`).
RECEIPT_CHANNELS = frozenset({"sms", "voice"})


@functools.cache
def host_name() -> str:
    """This machine's name, asked once: recovery compares it with every orphan candidate's owner."""
    return socket.gethostname()


def process_owner() -> str:
    """`host:pid`: names the process that claims a row, so its death can be recognised."""
    return f"{host_name()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    renderer: Renderer
    owner: str = field(default_factory=process_owner)
    _channels: dict[str, Channel] = field(default_factory=dict)
    _limiters: dict[str, RateLimiter] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _applier: ReceiptApplier | None = None

    def channel(self, name: str) -> Channel:
        """The open adapter for `name`, opened on first use."""
        with self._lock:
            if name not in self._channels:
                self._channels[name] = build_channel(name, self.settings)
                if name in RECEIPT_CHANNELS and self._applier is None:
                    self._applier = ReceiptApplier(self.settings.database_url)
                    self._applier.start()
            return self._channels[name]

    def limiter(self, name: str) -> RateLimiter:
        """The pacing of route `name`: shared by every worker on Redis, this process's own embedded."""
        with self._lock:
            if name not in self._limiters:
                self._limiters[name] = build_limiter(name, self.settings)
            return self._limiters[name]

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
        if self._applier is not None:
            self._applier.stop()
            self._applier = None


def make_runtime(settings: Settings) -> Runtime:
    return Runtime(settings=settings, renderer=Renderer(settings.templates_dir, timezone=settings.timezone,
                                                        default_language=settings.default_language))


def build_limiter(name: str, settings: Settings, *, on_grant: GrantLog | None = None) -> RateLimiter:
    """The route's agreed rate (SMS in parts/s) less the margin: on the broker's Redis, the total of
    all workers; embedded, this process's."""
    rate = route_rate(name, settings) * (1.0 - settings.dispatch.rate_margin)
    if settings.broker_url:
        from notifier.dispatch.ratelimit_redis import RedisRateLimiter

        return RedisRateLimiter(settings.broker_url, f"{settings.broker_namespace}:rate:{name}", rate,
                                on_grant=on_grant)
    return TokenBucket(rate, on_grant=on_grant)


def route_rate(name: str, settings: Settings) -> float:
    """The route's agreed rate: SMS parts (Twilio: segments), e-mails or calls started per second."""
    rates = {"sms": settings.dispatch.sms_per_second, "email": settings.dispatch.email_per_second,
             "voice": settings.dispatch.voice_per_second}
    if name not in rates:
        raise InputError(f"unknown channel '{name}'")
    return rates[name]


def build_channel(name: str, settings: Settings) -> Channel:
    """Open the adapter for one channel; receipts it hears go to the database (Twilio's arrive
    at `notifier web`, which stores them the same way)."""
    if name == "sms" and settings.sms_provider == "twilio":
        from channels.twilio_sms import TwilioSmsChannel

        return TwilioSmsChannel(settings.twilio, on_opted_out=opt_out_sink(settings.database_url))
    if name == "voice":
        from channels.twilio_voice import TwilioVoiceChannel

        return TwilioVoiceChannel(settings.twilio, settings.voice)
    if name == "sms":
        from channels.smpp import SmppChannel

        from notifier.replies import ReplyStore

        channel = SmppChannel(settings.smpp, on_receipt=receipt_sink(settings.database_url),
                              on_reply=ReplyStore(settings.database_url))
        channel.start()
        return channel
    if name == "email":
        from channels.email import EmailChannel

        return EmailChannel(settings.smtp, plain_credentials_allowed=settings.environment == "development")
    raise InputError(f"unknown channel '{name}'")


def opt_out_sink(database_url: str) -> Callable[[str], None]:
    """Marks a phone number's contact points opted out (Twilio refused it with 21610, STOP): the
    planner then suppresses it in later campaigns, with the reason, instead of trying again."""

    def mark(msisdn: str) -> None:
        from notifier.models import ContactPoint

        with session_scope(database_url) as session:
            session.execute(sa.update(ContactPoint).where(ContactPoint.kind == "msisdn", ContactPoint.value == msisdn)
                            .values(opted_out=True))

    return mark


def receipt_sink(database_url: str) -> Callable[[Receipt], None]:
    """The store the SMPP channel's receipt writer thread uses (batches, never on the reader
    thread; `ReceiptStore.store`), and where it records session liveness. `ReceiptApplier` applies."""
    from notifier.dispatch.receipts import ReceiptStore

    return ReceiptStore(database_url)


class ReceiptApplier:
    """A thread that applies stored receipts in batches, shortly after they arrive."""

    IDLE_SECONDS = 0.2
    # After a pass that applied less than a full page, pause this long: receipts then come in
    # batches of a few dozen instead of a handful (a pass costs about the same either way), and the
    # ones waiting for their send to be recorded are not read again on every turn of the loop.
    GATHER_SECONDS = 0.05
    # A receipt younger than this is left alone: on a fast SMSC nearly every receipt beats the
    # record of its send (a batch is recorded once its last answer is in), and a pass that took
    # them at once found no part for most, then read them again on the next pass, and the next.
    # Waiting a moment, each is read once, with its part recorded. (A receipt that arrives after
    # the record, the usual case with a real SMSC, is applied as it is stored: `store_applied`.)
    SETTLE_SECONDS = 0.2

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receipt-applier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Apply now rather than after the idle pause (a receipt was just stored)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from notifier.dispatch.receipts import PENDING_BATCH, apply_pending_receipts

        while not self._stop.is_set():
            try:
                with session_scope(self._database_url) as session:
                    # With destination matching, as maintenance: a receipt tried and not placed waits
                    # for its retry time (receipt_batch), so whoever reads it must make the full try.
                    applied = apply_pending_receipts(session, received_before=(
                        utcnow() - timedelta(seconds=self.SETTLE_SECONDS)))
            except Exception:  # noqa: BLE001 - keep applying; maintenance retries what failed
                log.exception("applying receipts failed; retrying")
                applied = 0
            if applied < PENDING_BATCH:
                self._wake.wait(self.GATHER_SECONDS if applied else self.IDLE_SECONDS)
                self._wake.clear()


_current: Runtime | None = None


def activate(runtime: Runtime) -> None:
    global _current
    _current = runtime


def deactivate() -> None:
    global _current
    _current = None


def current_runtime() -> Runtime:
    if _current is None:
        raise ConfigError("no runtime is active in this process (start a worker first)")
    return _current
