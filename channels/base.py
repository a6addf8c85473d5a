"""The one interface every delivery channel implements, and the values that cross it.

Adapters know nothing of the database: they get an `OutgoingMessage`, hand it to the provider and
return a `SendResult`, or raise `TransientChannelError` / `PermanentChannelError`
(`notifier.errors`) — `RouteUnreachableError`, a transient error, when the provider cannot be
reached at all, before any byte of the message left. Channels whose provider reports delivery
later (SMPP receipts) call the `ReceiptSink` given to them at construction; the sink is
thread-safe and owns persistence.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

# Normalised receipt outcomes (provider codes are kept raw in `Receipt.raw_status`).
RECEIPT_DELIVERED = "delivered"
RECEIPT_UNDELIVERED = "undelivered"
RECEIPT_EXPIRED = "expired"
RECEIPT_FAILED = "failed"
RECEIPT_PENDING = "pending"  # ENROUTE / ACCEPTD: not final, recorded as an event only


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to one destination, already rendered.

    `destination` is E.164 (`+84912345678`) for phone channels and a lower-cased address for e-mail.
    `reference` is our stable id for the message (e.g. `notification-42`); adapters put it where the
    protocol allows (e-mail Message-ID) so that a provider-side duplicate can be recognised.
    """

    notification_id: int
    destination: str
    body: str
    subject: str | None = None
    html: str | None = None
    reference: str = ""


@dataclass(frozen=True)
class SendResult:
    """What the provider said when it accepted the message.

    `provider_message_ids` has one id per provider unit: one per SMS part, one for an e-mail.
    """

    provider_message_ids: list[str]
    provider_status: str = "accepted"
    parts: int = 1
    encoding: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A provider's later word on one message (or one SMS part).

    `provider_message_id` is normalised by the adapter (see `channels.smpp_receipts.normalise_message_id`).
    `destination` is the subscriber address the receipt names, in E.164 or lower-case e-mail,
    when the protocol carries it: it lets a receipt resolve a notification whose send was never
    recorded because the sender crashed (state `unknown`).
    """

    channel: str
    provider_message_id: str
    status: str
    raw_status: str
    error_code: str | None = None
    done_at: datetime | None = None
    destination: str | None = None
    alternative_ids: tuple[str, ...] = ()  # the same id read another way (hex <-> decimal)


ReceiptSink = Callable[[Receipt], None]
# What happened to one message of a batch: accepted, or the error (a ChannelError, or anything
# unexpected, which the caller records as a failure of that message alone).
SendOutcome = SendResult | Exception


def send_each(channel: Channel, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
    """The default `send_many`: one `send` after the other, each message's exception its outcome."""
    outcomes: list[SendOutcome] = []
    for message in messages:
        try:
            outcomes.append(channel.send(message))
        except Exception as exc:  # noqa: BLE001 - one message's failure, whatever it is, is its outcome
            outcomes.append(exc)
    return outcomes


def send_all(channel: Channel, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
    """`channel.send_many` when the adapter has one (adapters written before it may not)."""
    batch = getattr(channel, "send_many", None)
    return batch(messages) if batch is not None else send_each(channel, messages)


def describe_connection_error(exc: BaseException, *, timeout_seconds: float | None = None) -> str:
    """A few words for people on why a connection failed ("connection refused", "timed out after
    5s"), from the first OS-level error in the exception's chain: libraries such as smpplib wrap
    the socket error in one of their own whose text says less (or something else)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _os_error_reason(current, timeout_seconds)
        if reason:
            return reason
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _os_error_reason(exc: BaseException, timeout_seconds: float | None) -> str | None:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_seconds:g}s" if timeout_seconds else "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return None


@runtime_checkable
class Channel(Protocol):
    """A delivery channel adapter. Implementations must be safe to call from several threads."""

    name: str
    # True when the provider later reports on every message it took (SMPP receipts, Twilio status
    # callbacks): a message written but not recorded when a process dies is then settled by that
    # report, never sent again blindly — so the dispatcher may pace such a route message by message
    # after the claim. E-mail has no such report.
    reports_each_message: bool

    def send(self, message: OutgoingMessage) -> SendResult:
        """Hand one message to the provider; raise a ChannelError subclass when it was not taken."""
        ...

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Hand several messages to the provider; one outcome per message, in order: its
        `SendResult`, or the exception that says why it was not (surely) taken. Never raises for
        one message's failure, so a batch's other messages carry on. `send_each` is the plain
        loop; adapters with a send window (SMPP) or a reusable session (SMTP) do better."""
        ...

    def check(self) -> None:
        """Raise `RouteUnreachableError` unless the provider can be reached.

        Cheap while the route is known to work; otherwise a real attempt (SMPP: connect and bind,
        SMTP: connect and EHLO) with the configured timeouts, at most once per short interval.
        `campaign run` calls it before queuing anything and while it follows a run, so that a
        dead route stops the run instead of failing every message.
        """
        ...

    def close(self) -> None:
        """Release connections; the adapter is not used afterwards."""
        ...
