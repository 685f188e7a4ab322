"""--rate: a token bucket shared by the workers."""

from __future__ import annotations

import time
from pathlib import Path

from runner.engine import Run, RunSettings
from runner.ratelimit import TokenBucket
from runner.scenario import Scenario, Turn
from runner.server import LocalServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_spaces_requests_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, clock=clock)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]
    clock.now = 10.0  # idle time refills up to the burst only
    assert [bucket.reserve() for _ in range(2)] == [0.0, 0.25]


def test_burst_allows_that_many_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_acquire_waits_through_the_given_function() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock)
    waited: list[float] = []
    bucket.acquire(waited.append)
    bucket.acquire(waited.append)
    assert waited == [0.1]


def test_run_respects_the_rate_without_serialising(tmp_path: Path) -> None:
    scs = [
        Scenario(
            name=f"s{i}",
            file="s.yaml",
            line=1,
            sha256="0" * 64,
            turns=(Turn(user="a", line=2), Turn(user="b", line=3)),
        )
        for i in range(6)
    ]
    # Each turn takes 0.2 s at the server: one worker would need 12 x 0.2 = 2.4 s.
    with LocalServer(first_token_delay=0.2) as server:
        t0 = time.perf_counter()
        summary = Run(
            scs, RunSettings(endpoint=server.url, out_dir=tmp_path, concurrency=4, rate=20.0)
        ).execute()
        elapsed = time.perf_counter() - t0
    assert summary.ok == 12
    # 12 requests at 20/s: the last cannot start before 11/20 s ...
    assert elapsed >= 0.55 + 0.2 - 0.05
    # ... but the 4 workers still overlap their turns.
    assert elapsed < 1.8
