"""What a sending process holds: settings, the renderer, open channels and their pacing.

One `Runtime` per process (the embedded `campaign run` or a `notifier worker`). Actors reach it
through `current_runtime()`, set by `activate()` when the process starts sending.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from channels.base import Channel, Receipt
from notifier.db import session_scope
from notifier.errors import ConfigError, InputError
from notifier.ratelimit import TokenBucket
from notifier.rendering import Renderer
from notifier.settings import Settings


def process_owner() -> str:
    """`host:pid`: names the process that claims a row, so its death can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    renderer: Renderer
    owner: str = field(default_factory=process_owner)
    _channels: dict[str, Channel] = field(default_factory=dict)
    _limiters: dict[str, TokenBucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def channel(self, name: str) -> Channel:
        """The open adapter for `name`, opened on first use."""
        with self._lock:
            if name not in self._channels:
                self._channels[name] = build_channel(name, self.settings)
            return self._channels[name]

    def limiter(self, name: str) -> TokenBucket:
        with self._lock:
            if name not in self._limiters:
                rate = {"sms": self.settings.dispatch.sms_per_second,
                        "email": self.settings.dispatch.email_per_second}[name]
                self._limiters[name] = TokenBucket(rate)
            return self._limiters[name]

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def make_runtime(settings: Settings) -> Runtime:
    return Runtime(settings=settings, renderer=Renderer(settings.templates_dir, timezone=settings.timezone,
                                                        default_language=settings.default_language))


def build_channel(name: str, settings: Settings) -> Channel:
    """Open the adapter for one channel; receipts it hears go to the database."""
    if name == "sms":
        from channels.smpp import SmppChannel

        channel = SmppChannel(settings.smpp, on_receipt=receipt_sink(settings.database_url))
        channel.start()
        return channel
    if name == "email":
        from channels.email import EmailChannel

        return EmailChannel(settings.smtp)
    raise InputError(f"unknown channel '{name}'")


def receipt_sink(database_url: str):  # type: ignore[no-untyped-def]
    """A thread-safe callback that stores a receipt, then applies it if it can already."""
    from notifier.receipts import apply_receipt, record_receipt

    def sink(receipt: Receipt) -> None:
        with session_scope(database_url) as session:
            row = record_receipt(session, receipt)
            apply_receipt(session, row, allow_destination_match=False)

    return sink


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
