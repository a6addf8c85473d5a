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
