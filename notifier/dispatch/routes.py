"""Routes to the providers (the SMSC, the mail relay): how people name them, and a watch that
notices when one stops answering and when it answers again.

An outage is the route's fault, not the messages': it is logged once when it starts and once when
it ends (never once per message), and the one-line error an operator gets names the route, why it
failed, and what to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from notifier.errors import RouteUnreachableError
from notifier.dispatch.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """How people name a channel's provider, where it is configured, and the loopback stand-in."""

    service: str
    settings: str
    peer: str


ROUTES = {"sms": Route("SMSC", "NOTIFIER_SMPP__HOST/PORT", "notifier peers smsc"),
          "email": Route("mail relay", "NOTIFIER_SMTP__HOST/PORT", "notifier peers smtp")}


def unreachable_message(errors: list[RouteUnreachableError], outcome: str, *, lasting: float | None = None) -> str:
    """One line for the operator: which route, why, what happened to the campaign, what to check.

    `cannot reach the SMSC at 127.0.0.1:2775 (connection refused); nothing was sent. Check
    NOTIFIER_SMPP__HOST/PORT or start it (`notifier peers smsc`).`
    """
    routes = [ROUTES.get(error.channel, Route(error.channel, "its settings", "")) for error in errors]
    where = " or ".join(f"the {route.service} at {error.address} ({error.reason})"
                        for route, error in zip(routes, errors))
    lasted = f" for {lasting:.0f}s" if lasting is not None else ""
    peers = ", ".join(f"`{route.peer}`" for route in routes if route.peer)
    start = f" or start {'it' if len(errors) == 1 else 'them'} ({peers})" if peers else ""
    return f"cannot reach {where}{lasted}; {outcome}. Check {', '.join(r.settings for r in routes)}{start}."


@dataclass
class Outage:
    """A route seen unreachable since `since` (time.monotonic()), and the latest error."""

    since: float
    error: RouteUnreachableError


class RouteWatch:
    """Checks each open channel's route once per poll and remembers outages, so that an outage is
    one log line when it starts and one when it ends (not one per message), and a run can tell how
    long a route has been down."""

    def __init__(self, runtime: Runtime, channels: list[str]) -> None:
        self._runtime = runtime
        self._channels = list(channels)
        self.outages: dict[str, Outage] = {}

    def poll(self, channels: Iterable[str] | None = None) -> list[str]:
        """Check every channel (or those named); returns the ones that came back since the last poll."""
        wanted = set(self._channels if channels is None else channels)
        recovered = []
        for name in [name for name in self._channels if name in wanted]:
            try:
                self._runtime.channel(name).check()
            except RouteUnreachableError as exc:
                self._down(name, exc)
                continue
            outage = self.outages.pop(name, None)
            if outage is not None:
                log.warning("[channel:%s] the %s at %s answers again after %.0fs", name,
                            service_name(name), outage.error.address, time.monotonic() - outage.since)
                recovered.append(name)
        return recovered

    def lasting(self, channels: Iterable[str], seconds: float) -> list[tuple[RouteUnreachableError, float]]:
        """(latest error, seconds down) for each of `channels` down for at least `seconds`."""
        now = time.monotonic()
        return [(self.outages[name].error, now - self.outages[name].since) for name in channels
                if name in self.outages and now - self.outages[name].since >= seconds]

    def _down(self, name: str, exc: RouteUnreachableError) -> None:
        outage = self.outages.get(name)
        if outage is not None:
            outage.error = exc
            return
        self.outages[name] = Outage(time.monotonic(), exc)
        log.warning("[channel:%s] cannot reach the %s at %s (%s); its messages wait until it answers",
                    name, service_name(name), exc.address, exc.reason)


def service_name(channel: str) -> str:
    """"SMSC", "mail relay": what people call a channel's provider."""
    route = ROUTES.get(channel)
    return route.service if route else f"{channel} provider"
