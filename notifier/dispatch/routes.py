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


PROBE_FIRST_SECONDS = 1.0  # a route that went down is probed again after 1 s, 2 s, 4 s …
PROBE_MAX_SECONDS = 30.0  # … up to every 30 s: back within half a minute of the route returning
STILL_DOWN_EVERY_SECONDS = 300.0  # "still down for N min" at most every 5 minutes


@dataclass
class Outage:
    """A route seen unreachable since `since` (time.monotonic()), the latest error, and when to
    probe it next (capped exponential backoff) and say it is still down."""

    since: float
    error: RouteUnreachableError
    probe_delay: float = PROBE_FIRST_SECONDS
    next_probe: float = 0.0
    next_report: float = 0.0


class RouteWatch:
    """Checks each open channel's route and remembers outages, so that an outage is one log line
    when it starts and one when it ends (plus "still down for N min" at most every
    `STILL_DOWN_EVERY_SECONDS`), never one per message, and a run can tell how long a route has
    been down. A route that is down is probed with capped backoff, not on every poll: a dead
    SMSC costs a connect timeout per probe."""

    def __init__(self, runtime: Runtime, channels: list[str]) -> None:
        self._runtime = runtime
        self._channels = list(channels)
        self.outages: dict[str, Outage] = {}

    @property
    def down(self) -> list[str]:
        """The channels seen unreachable at the last probe."""
        return list(self.outages)

    def poll(self, channels: Iterable[str] | None = None, *, force: bool = False) -> list[str]:
        """Check every channel (or those named) that is up or due for a probe (`force`: every
        one, backoff or not); returns the ones that came back since the last poll."""
        wanted = set(self._channels if channels is None else channels)
        recovered = []
        now = time.monotonic()
        for name in [name for name in self._channels if name in wanted]:
            outage = self.outages.get(name)
            if outage is not None and now < outage.next_probe and not force:
                self._report_still_down(name, outage, now)
                continue
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
        now = time.monotonic()
        outage = self.outages.get(name)
        if outage is not None:
            outage.error = exc
            outage.probe_delay = min(outage.probe_delay * 2, PROBE_MAX_SECONDS)
            outage.next_probe = now + outage.probe_delay
            self._report_still_down(name, outage, now)
            return
        self.outages[name] = Outage(now, exc, next_probe=now + PROBE_FIRST_SECONDS,
                                    next_report=now + STILL_DOWN_EVERY_SECONDS)
        log.warning("[channel:%s] cannot reach the %s at %s (%s); its messages wait until it answers",
                    name, service_name(name), exc.address, exc.reason)

    @staticmethod
    def _report_still_down(name: str, outage: Outage, now: float) -> None:
        if now < outage.next_report:
            return
        outage.next_report = now + STILL_DOWN_EVERY_SECONDS
        log.warning("[channel:%s] the %s at %s is still down after %.0f min (%s); its messages wait",
                    name, service_name(name), outage.error.address, (now - outage.since) / 60, outage.error.reason)


def service_name(channel: str) -> str:
    """"SMSC", "mail relay": what people call a channel's provider."""
    route = ROUTES.get(channel)
    return route.service if route else f"{channel} provider"
