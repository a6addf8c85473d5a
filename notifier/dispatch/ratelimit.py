"""Pacing per route, counting SMS parts: one agreed rate, smooth, slowed down by throttling answers.

Two limiters share one interface (`RateLimiter`) and one `acquire` (`SlotLimiter`): `acquire(n)`
blocks until n parts may leave and `throttled()` tells the route that the provider said "too
fast". Both keep the same state, a
virtual scheduling clock (GCRA): `free` is the moment the parts granted so far are paid for at the
current rate; a grant of n parts moves it n / rate later and the caller sleeps until it. An idle
route lends at most `burst` parts (default one), so the provider never sees more than rate + 1
parts in any sliding second — an SMSC counts its window on its own clock, so a burst of a
second's worth (the classic bucket) would show it twice the agreed rate. A grant of more parts
than one second's worth is paid for in full before it returns (it can never deadlock, and the
next caller waits behind it).

A grant is a slot on that clock, and the provider counts the moment the message arrives, not the
slot: a caller that wakes up late (this host descheduled the process, another thread held the
GIL) and writes anyway lands next to the slots after its own, and a few such late writers in one
second show the provider more than the agreed rate while the schedule itself was exact. So a
grant is only good for `LATE_SECONDS` after its slot: a caller that wakes up later gives its slot
up (a gap at the provider, never a burst) and takes the next free one, at most `LATE_RETRIES`
times. The only jitter left is between the return and the write (microseconds of encoding) and
on the way to the provider; `dispatch.rate_margin` covers that.

- `TokenBucket` paces one process (embedded mode: no broker URL).
- `RedisRateLimiter` (notifier/dispatch/ratelimit_redis.py) paces every process and machine that
  shares the broker's Redis through one Lua script run on Redis's clock, so N workers together keep
  the route's rate, not N times it.

Throttling (`ESME_RTHROTTLED`, `ESME_RMSGQFUL`): the rate is cut in half (at most once per
`HOLD_SECONDS`, because every submit in flight answers "throttled" at once), never below
`MIN_FACTOR` of the agreed rate, then grows back by `INCREASE_PER_SECOND` of the agreed rate a
second (additive increase, multiplicative decrease, as TCP does with a congested link).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, overload

T = TypeVar("T")

DEFAULT_BURST_PARTS = 1.0
DECREASE_FACTOR = 0.5  # a throttling answer halves the rate
INCREASE_PER_SECOND = 0.05  # then it climbs back by 5% of the agreed rate a second (50% → 100% in 10 s)
MIN_FACTOR = 1 / 32  # never below ~3% of the agreed rate: the route keeps probing
HOLD_SECONDS = 1.0  # one cut per second at most: a window of submits answers "throttled" together
# A slot is good this long: a caller waking up later takes a new slot rather than write late (above).
LATE_SECONDS = 0.01
LATE_RETRIES = 1  # then it writes anyway: on an overloaded host every slot given up is a slot lost

# submit_sm_resp statuses (as channels/smpp.py writes provider_status) that mean "slow down".
THROTTLING_STATUSES = frozenset({"0x00000058", "0x00000014",  # ESME_RTHROTTLED, ESME_RMSGQFUL
                                 "twilio:20429"})  # Twilio 429 / 20429 (channels/twilio_sms.py)

GrantLog = Callable[[float, float], None]  # (scheduled grant time, epoch seconds; parts)


class RateLimiter(Protocol):
    """What the send path uses to pace a route."""

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until `tokens` parts may leave; return the seconds waited."""

    def throttled(self) -> None:
        """The provider answered "throttled": slow the route down for a while."""

    def current_rate(self) -> float:
        """Parts per second granted right now (the agreed rate, or less after throttling)."""


def is_throttling(provider_status: str | None) -> bool:
    """True when a provider status asks us to slow down (not a refusal of the message)."""
    return provider_status in THROTTLING_STATUSES


@dataclass(frozen=True)
class Backoff:
    """The additive-increase / multiplicative-decrease policy; the Lua script takes the same numbers."""

    decrease: float = DECREASE_FACTOR
    increase_per_second: float = INCREASE_PER_SECOND
    min_factor: float = MIN_FACTOR
    hold_seconds: float = HOLD_SECONDS


@dataclass
class _Aimd:
    """The rate factor (0 < f ≤ 1) as a function of time: `base` at `since`, growing linearly."""

    policy: Backoff
    base: float = 1.0
    since: float = 0.0
    cut_at: float = float("-inf")

    def factor(self, now: float) -> float:
        return min(1.0, self.base + (now - self.since) * self.policy.increase_per_second)

    def cut(self, now: float) -> None:
        if now - self.cut_at < self.policy.hold_seconds:
            return
        self.base = max(self.policy.min_factor, self.factor(now) * self.policy.decrease)
        self.since = self.cut_at = now


def sleep_until(slot: float) -> None:
    """Sleep until the monotonic moment `slot` (at once if it has passed)."""
    wait = slot - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def woke_late(slot: float) -> bool:
    """True when the caller woke up more than `LATE_SECONDS` after its slot: writing now would
    put its message next to the following slots' (see the module docstring)."""
    return time.monotonic() - slot > LATE_SECONDS


class SlotLimiter:
    """What both limiters share: the agreed rate and burst, and `acquire`, which books slots until
    one is woken up to in time (module docstring). Where the clock is kept — this process or
    Redis — is the subclass's `_reserve`."""

    def __init__(self, rate: float, burst: float | None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst if burst is not None else DEFAULT_BURST_PARTS, 1.0)

    def acquire(self, tokens: float = 1.0) -> float:
        """Reserve `tokens` parts on the route's clock and sleep until they are paid for; a slot
        woken up to too late is given up for the next free one (`LATE_SECONDS`)."""
        if tokens <= 0:
            return 0.0
        started = time.monotonic()
        for _ in range(LATE_RETRIES + 1):
            slot = self._reserve(tokens)
            if tokens > self.rate or not woke_late(slot):  # a grant over a second's worth is a chunk: kept
                break
        return time.monotonic() - started

    def _reserve(self, tokens: float) -> float:
        """Book `tokens` parts; sleep until their slot (monotonic seconds, this host), which is returned."""
        raise NotImplementedError


class TokenBucket(SlotLimiter):
    """Pacing for one process: `rate` parts a second, `burst` parts lent to an idle route.

    Thread-safe; sleeping happens outside the lock, so threads queue on the virtual clock, each
    sleeping until its own slot.
    """

    def __init__(self, rate: float, burst: float | None = None, *, backoff: Backoff | None = None,
                 on_grant: GrantLog | None = None) -> None:
        super().__init__(rate, burst)
        self._aimd = _Aimd(backoff or Backoff(), since=time.monotonic())
        self._free = float("-inf")
        self._lock = threading.Lock()
        self._on_grant = on_grant

    def _reserve(self, tokens: float) -> float:
        """Book `tokens` parts; sleep until their slot (monotonic seconds), which is returned."""
        with self._lock:
            now = time.monotonic()
            rate = self.rate * self._aimd.factor(now)
            start = max(self._free, now - self.burst / rate)
            self._free = start + tokens / rate
            slot = max(self._free, now)
        if self._on_grant is not None:
            self._on_grant(time.time() + slot - now, tokens)
        sleep_until(slot)
        return slot

    def throttled(self) -> None:
        with self._lock:
            self._aimd.cut(time.monotonic())

    def current_rate(self) -> float:
        with self._lock:
            return self.rate * self._aimd.factor(time.monotonic())


class Paced(Sequence[T], Generic[T]):
    """A batch whose items come out of iteration at the route's pace: each item's parts are
    acquired just before it is handed over. A channel's `send_many` iterates its batch and writes
    each message as it gets it, so a batch claimed at once still reaches the provider smoothly —
    acquiring a whole batch first and then writing it at once would show the provider the batch
    in one instant (twice the agreed rate in a sliding second). Indexing does not pace."""

    def __init__(self, limiter: RateLimiter, items: Sequence[T], parts: Sequence[float]) -> None:
        if len(items) != len(parts):
            raise ValueError("one part count per item")
        self._limiter, self._items, self._parts = limiter, list(items), list(parts)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        for item, parts in zip(self._items, self._parts):
            self._limiter.acquire(parts)
            yield item
