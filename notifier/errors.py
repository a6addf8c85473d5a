"""The exceptions notifier raises: one small tree, so callers can catch by kind."""

from __future__ import annotations


class NotifierError(Exception):
    """Base class for every error notifier raises on purpose."""


class ConfigError(NotifierError):
    """Raised when settings are missing, contradictory or unsafe for the environment."""


class InputError(NotifierError):
    """Raised when an input file or argument cannot be used at all (missing file, unknown format).

    A single bad row is not an InputError: parsers report it as a rejection and carry on.
    """


class DatabaseError(NotifierError):
    """Raised when the database cannot be used at all: unreachable, locked too long, or unusable URL.

    The message names the database with its password hidden, never the driver's full text.
    """


class SchemaMissingError(DatabaseError):
    """Raised when tables or columns are missing: the database was never migrated or is behind."""

    def __init__(self) -> None:
        super().__init__("the database has no schema (or is at an older revision): run `notifier db upgrade`")


class MatchError(NotifierError):
    """Raised when identity resolution cannot run (e.g. an identifier kind it does not know)."""


class NotFoundError(NotifierError):
    """Raised when a feed, campaign or notification id does not exist."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class ChannelError(NotifierError):
    """Raised by a channel adapter when a message could not be handed to the provider."""

    def __init__(self, message: str, *, provider_status: str | None = None) -> None:
        super().__init__(message)
        self.provider_status = provider_status


class TransientChannelError(ChannelError):
    """Raised when sending failed for a reason that may pass (connection lost, throttled, queue full)."""


class PermanentChannelError(ChannelError):
    """Raised when the provider refused the message for good (invalid destination, rejected content)."""


class RecipientOptedOutError(PermanentChannelError):
    """Raised when the provider refuses a message because the subscriber opted out (Twilio 21610,
    the subscriber replied STOP): the notification is `suppressed`, not `failed` — nothing is wrong
    with the message or the route, the subscriber said no."""


class RouteUnreachableError(TransientChannelError):
    """Raised when a channel cannot reach its provider at all (connection refused or timed out,
    bind or session set-up refused): no message is to blame, so none may be failed for it.

    `channel` is the channel's name, `address` is `host:port`, `reason` a few words for people
    ("connection refused").
    """

    def __init__(self, message: str, *, channel: str, address: str, reason: str,
                 provider_status: str | None = None) -> None:
        super().__init__(message, provider_status=provider_status)
        self.channel = channel
        self.address = address
        self.reason = reason


class OutcomeUnknownError(TransientChannelError):
    """Raised when the message was handed over but the provider's answer was lost (the connection
    dropped or the answer timed out): the provider may have it, so sending it again at once could
    deliver it twice. The row becomes `unknown`, settled by a receipt or the resend delay."""
