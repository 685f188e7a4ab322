"""``--rate R``: at most R requests per second across all workers (a token bucket).

Workers block in :meth:`TokenBucket.acquire` only for as long as their own
request must wait, so a rate limit paces the run without serialising it: with
R = 10 and 8 workers, 8 conversations are in flight while requests start at
most 10 per second. Every attempt takes a token, retries included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def reserve(self) -> float:
        """Take a token now; return how many seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, wait: Callable[[float], object] = time.sleep) -> None:
        """Block until the caller may send (``wait`` may return early, e.g. on stop)."""
        delay = self.reserve()
        if delay > 0:
            wait(delay)
