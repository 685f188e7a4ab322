"""The retry policy: what is retried, and the waits, with an injected sleep."""

from __future__ import annotations

import pytest

from runner.errors import (
    ConnectError,
    HTTPStatusError,
    IdleTimeout,
    InBandError,
    IncompleteStreamError,
    ProtocolError,
    TurnError,
)
from runner.retry import RetryPolicy


def attempts_until(policy: RetryPolicy, errors: list[TurnError], *, rand: float = 0.5):  # type: ignore[no-untyped-def]
    waits: list[float] = []
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    retrying = policy.retrying(sleep=waits.append, rand=lambda: rand)
    try:
        result = retrying(fn)
    except TurnError as exc:
        result = exc
    return result, len(calls), waits


@pytest.mark.parametrize(
    "error",
    [
        ConnectError("refused"),
        IdleTimeout("stall"),
        HTTPStatusError("x", http_status=408),
        HTTPStatusError("x", http_status=409),
        HTTPStatusError("x", http_status=429),
        HTTPStatusError("x", http_status=500),
        HTTPStatusError("x", http_status=503),
        IncompleteStreamError("cut"),
        InBandError("in band"),
        ProtocolError("junk"),
    ],
)
def test_transient_errors_are_retried(error: TurnError) -> None:
    result, calls, waits = attempts_until(RetryPolicy(max_attempts=4), [error, error])
    assert (result, calls, len(waits)) == ("ok", 3, 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(status: int) -> None:
    error = HTTPStatusError("x", http_status=status)
    result, calls, waits = attempts_until(RetryPolicy(max_attempts=4), [error])
    assert result is error and calls == 1 and waits == []


def test_gives_up_after_max_attempts_and_reraises_the_last_error() -> None:
    errors: list[TurnError] = [IdleTimeout(f"t{i}") for i in range(5)]
    result, calls, waits = attempts_until(RetryPolicy(max_attempts=3), errors)
    assert result is errors[2] and calls == 3 and len(waits) == 2


def test_full_jitter_exponential_backoff_with_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base=1.0, cap=30.0)
    errors: list[TurnError] = [IdleTimeout("t")] * 7
    _, _, waits = attempts_until(policy, errors, rand=1.0)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    _, _, waits = attempts_until(policy, errors, rand=0.25)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 7.5, 7.5]


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after=120.0)
    errors: list[TurnError] = [
        HTTPStatusError("x", http_status=429, retry_after=7.0),
        HTTPStatusError("x", http_status=503, retry_after=600.0),
    ]
    _, calls, waits = attempts_until(policy, errors, rand=0.0)
    assert calls == 3 and waits == [7.0, 120.0]


def test_should_stop_ends_the_retries() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise IdleTimeout("t")

    retrying = RetryPolicy(max_attempts=10).retrying(sleep=waits.append, should_stop=lambda: True)
    with pytest.raises(IdleTimeout):
        retrying(fn)
    assert calls == [1] and waits == []


def test_before_sleep_sees_the_wait() -> None:
    seen: list[tuple[int, str, float]] = []
    retrying = RetryPolicy(max_attempts=2).retrying(
        sleep=lambda s: None,
        rand=lambda: 1.0,
        before_sleep=lambda n, err, wait: seen.append((n, type(err).__name__, wait)),
    )
    with pytest.raises(IdleTimeout):
        retrying(lambda: (_ for _ in ()).throw(IdleTimeout("t")))
    assert seen == [(1, "IdleTimeout", 1.0)]
