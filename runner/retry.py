"""The retry policy, in one place, built from settings.

The unit of retry is one whole turn: each attempt starts the request over, and
a failed attempt's partial text stays in that attempt's record.

* retry what :class:`~runner.errors.TurnError` marks ``retryable``: connection
  errors, timeouts, HTTP 408/409/429/5xx, incomplete streams, in-band errors,
  protocol errors; never other 4xx;
* wait with full-jitter exponential backoff, ``uniform(0, min(cap, base * 2**(n-1)))``
  after attempt n;
* unless the server said how long: ``Retry-After`` / ``retry-after-ms``, honoured
  up to ``max_retry_after`` seconds;
* the sleep is injectable (tests pass ``waits.append``; the runner passes an
  ``Event.wait`` so that a stop request cuts the wait short).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from runner.errors import TurnError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base: float = 1.0
    cap: float = 30.0
    max_retry_after: float = 120.0

    def wait_after(self, attempt: int, error: BaseException | None, rand: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(error, TurnError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        return rand * min(self.cap, self.base * 2.0 ** (attempt - 1))

    def retrying(
        self,
        *,
        sleep: Callable[[float], Any],
        should_stop: Callable[[], bool] = lambda: False,
        rand: Callable[[], float] = random.random,
        before_sleep: Callable[[int, BaseException | None, float], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that runs one turn's attempts under this policy."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.wait_after(state.attempt_number, error, rand())

        def stop(state: tenacity.RetryCallState) -> bool:
            return state.attempt_number >= self.max_attempts or should_stop()

        def hook(state: tenacity.RetryCallState) -> None:
            if before_sleep is not None:
                error = state.outcome.exception() if state.outcome else None
                upcoming = state.next_action.sleep if state.next_action else 0.0
                before_sleep(state.attempt_number, error, upcoming)

        return tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, TurnError) and exc.retryable
            ),
            sleep=sleep,
            before_sleep=hook,
            reraise=True,
        )
