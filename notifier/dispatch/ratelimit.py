"""A per-process token bucket: smooth pacing of a channel, counting SMS parts, not messages.

This paces one process. Several `notifier worker` processes each get their own bucket, so the
operator divides the route's limit by the number of workers until the shared Redis limiter of the
dispatch engine (roadmap) replaces it.
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """Refills `rate` tokens a second up to `burst`; `acquire(n)` blocks until n are available."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(burst if burst is not None else rate, 1.0)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Take `tokens` (more than the burst is allowed: it waits for the debt); returns seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= tokens
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait:
            time.sleep(wait)
        return wait
