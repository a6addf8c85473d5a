"""One rate per route for every worker: the pacing clock of notifier/dispatch/ratelimit.py kept in Redis.

dramatiq's own limiters do not fit a smooth parts-per-second pace: `WindowRateLimiter` grants a
whole calendar second's quota in its first milliseconds (up to twice the limit in a sliding
second), `BucketRateLimiter` over-grants at low rates, and both make the caller retry instead of
queueing it (../shared/spec/libraries.md). Here one Lua script (EVALSHA; redis-py loads it again
after a Redis restart) reads Redis's own clock (`TIME`, so machines with skewed clocks agree),
moves the route's virtual clock by n / rate and answers how long to sleep: one round trip per grant,
callers of every process queue in arrival order, and the same hash holds the throttling factor.
The slot is placed on this host's monotonic clock as "answer received + wait" (never earlier than
Redis meant it, so skewed clocks do not matter), and a caller that wakes up more than
`LATE_SECONDS` after it takes a new slot, as the embedded bucket does (ratelimit.py).

A Redis that does not answer never means "send unlimited": `acquire` waits and tries again (one
log line when it goes, one when it is back).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from notifier.dispatch.ratelimit import Backoff, GrantLog, SlotLimiter, sleep_until
from notifier.redaction import hide_url_passwords

log = logging.getLogger(__name__)

RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS = 0.25, 5.0
SOCKET_TIMEOUT_SECONDS = 5.0
IDLE_EXPIRY_MS = 120_000  # a route's state outlives its last grant this long (longer than any recovery)

# KEYS[1] the route's hash {free, base, since, cut}. ARGV: op ("acquire" | "throttled" | "rate"), rate,
# tokens, burst, decrease, increase_per_second, min_factor, hold_seconds.
# Returns {wait in microseconds, grant time (Redis clock, seconds, as text), factor (as text)}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, rate, tokens, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local decrease, increase, min_factor, hold = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
    tonumber(ARGV[8])
local s = redis.call('HMGET', KEYS[1], 'free', 'base', 'since', 'cut')
local free = tonumber(s[1]) or 0
local base = tonumber(s[2]) or 1
local since = tonumber(s[3]) or now
local cut = tonumber(s[4]) or 0
local factor = math.min(1, base + (now - since) * increase)
local function keep(ttl_ms)
  redis.call('PEXPIRE', KEYS[1], math.floor(ttl_ms))
end
if op == 'throttled' then
  if now - cut >= hold then
    factor = math.max(min_factor, factor * decrease)
    redis.call('HSET', KEYS[1], 'base', string.format('%.9f', factor), 'since', string.format('%.6f', now),
               'cut', string.format('%.6f', now))
  end
  keep(tonumber(ARGV[9]))
  return {0, string.format('%.6f', now), string.format('%.9f', factor)}
end
if op == 'rate' then
  return {0, string.format('%.6f', now), string.format('%.9f', factor)}
end
local effective = rate * factor
local start = math.max(free, now - burst / effective)
free = start + tokens / effective
redis.call('HSET', KEYS[1], 'free', string.format('%.6f', free))
local wait = math.max(0, free - now)
keep(wait * 1000 + tonumber(ARGV[9]))
return {math.ceil(wait * 1000000), string.format('%.6f', math.max(free, now)), string.format('%.9f', factor)}
"""


class RedisRateLimiter(SlotLimiter):
    """`rate` parts a second on route `key`, shared by every process using the same Redis key."""

    def __init__(self, url: str, key: str, rate: float, *, burst: float | None = None,
                 backoff: Backoff | None = None, on_grant: GrantLog | None = None,
                 client: redis.Redis | None = None) -> None:
        super().__init__(rate, burst)
        self.key = key
        self._backoff = backoff or Backoff()
        self._where = hide_url_passwords(url)
        self._client = client or redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS)
        self._script = self._client.register_script(_SCRIPT)
        self._on_grant = on_grant
        self._down = False
        self._down_lock = threading.Lock()

    def _reserve(self, tokens: float) -> float:
        """Book `tokens` parts on the shared clock; sleep until their slot (monotonic seconds here)."""
        wait_us, granted_at, _ = self._call("acquire", tokens)
        slot = time.monotonic() + int(wait_us) / 1_000_000
        if self._on_grant is not None:
            self._on_grant(float(granted_at), tokens)
        sleep_until(slot)
        return slot

    def throttled(self) -> None:
        """Cut the route's rate for every worker (once per hold period, whoever reports it)."""
        self._call("throttled", 0)

    def current_rate(self) -> float:
        return self.rate * float(self._call("rate", 0)[2])

    def _call(self, op: str, tokens: float) -> list[bytes | int]:
        """Run the script, waiting out a Redis that does not answer: never grant without it."""
        delay = RETRY_INITIAL_SECONDS
        args = [op, repr(self.rate), repr(float(tokens)), repr(self.burst), repr(self._backoff.decrease),
                repr(self._backoff.increase_per_second), repr(self._backoff.min_factor),
                repr(self._backoff.hold_seconds), str(IDLE_EXPIRY_MS)]
        while True:
            try:
                result = self._script(keys=[self.key], args=args)
            except redis.RedisError as exc:
                self._mark_down(exc)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self._mark_up()
            return list(result)

    def _mark_down(self, exc: Exception) -> None:
        with self._down_lock:
            if self._down:
                return
            self._down = True
        log.warning("rate limit %s: Redis at %s does not answer (%s); holding the route until it does",
                    self.key, self._where, type(exc).__name__)

    def _mark_up(self) -> None:
        if not self._down:
            return
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        log.warning("rate limit %s: Redis at %s answers again; pacing resumes", self.key, self._where)
