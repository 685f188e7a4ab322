"""Timeouts that mean what they say: each fires at its setting, as its own error type.

Every test runs one turn with ``max_attempts=1`` through the run engine against
an endpoint on 127.0.0.1 that stalls in one particular way, and checks that the
turn ends within ``TOLERANCE`` of the setting, measured twice: with
``time.perf_counter`` around the run, and from the attempt's ``duration_ms``.

A connect timeout needs a peer that neither accepts nor refuses. A listening
socket that never accepts, with ``listen(0)`` and its accept queue already full,
is one: Linux drops a SYN to a full queue (it does not answer with a reset), so
the client's ``connect()`` waits for SYN retransmits that get dropped too. The
fixture checks that the kernel behaves so before using it.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from runner.client import Timeouts
from runner.engine import Run, RunSettings, RunSummary
from runner.faults import FaultPlan
from runner.retry import RetryPolicy
from runner.scenario import Scenario, Turn
from runner.server import LocalServer

SETTING = 0.5  # seconds: the timeout under test
TOLERANCE = 0.2  # a timeout fires within ±20 % of its setting
LONG = 5.0  # the timeouts not under test, and the stalls: well past SETTING
FILL = 4  # connections queued on the unanswered listener before the test's own
TRIES = 3  # measurements of a timeout that fired late, before calling it late
BOOKKEEPING = 0.1  # seconds a run spends around its one attempt: run dir, run.json, threads


def scenario(text: str = "hi") -> Scenario:
    return Scenario(
        name="s", file="s.yaml", line=1, turns=(Turn(user=text, line=2),), sha256="0" * 64
    )


def run_one(tmp_path: Path, url: str, timeouts: Timeouts) -> tuple[float, dict[str, Any]]:
    """One turn, one attempt: the run's elapsed seconds and the turn's record."""
    settings = RunSettings(
        url, out_dir=tmp_path, retry=RetryPolicy(max_attempts=1), timeouts=timeouts
    )
    t0 = time.perf_counter()
    summary: RunSummary = Run([scenario()], settings, sleep=lambda s: None).execute()
    elapsed = time.perf_counter() - t0
    (record,) = [json.loads(line) for line in (summary.run_dir / "transcript.jsonl").open()]
    return elapsed, record


def assert_fires(
    kind: str, setting: float, once: Callable[[], tuple[float | None, dict[str, Any]]]
) -> dict[str, Any]:
    """``once()`` ends in ``kind`` after ``setting`` seconds, ±TOLERANCE; returns its record.

    Firing early is a bug and fails at once. Firing late can also be a busy
    machine (the stream's first chunk or the run's own bookkeeping delayed), so
    a late result is measured again, up to ``TRIES`` times in all; a timeout that
    is really late is late every time.
    """
    low, high = setting * (1 - TOLERANCE), setting * (1 + TOLERANCE)
    late: list[str] = []
    for _ in range(TRIES):
        elapsed, record = once()
        assert record["status"] == "error"
        assert record["error"]["type"] == kind, record["error"]
        (attempt,) = record["attempts"]
        assert attempt["error"]["type"] == kind
        assert attempt["error"]["retryable"] is True
        took = attempt["duration_ms"] / 1000
        assert took >= low, f"{kind} fired after {took:.3f}s, set to {setting}s"
        if elapsed is None:  # only the attempt's own measure
            elapsed = took
        assert elapsed >= low, f"the run took {elapsed:.3f}s, {kind} set to {setting}s"
        if took <= high and elapsed <= high + BOOKKEEPING:
            return record
        late.append(f"attempt {took:.3f}s, run {elapsed:.3f}s")
    raise AssertionError(f"{kind} set to {setting}s fired late every time: {late}")


def timeouts(**kw: float) -> Timeouts:
    values = {"connect": LONG, "first_byte": LONG, "idle": LONG, "turn": 4 * LONG, **kw}
    return Timeouts(**values)


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port on 127.0.0.1 where ``connect()`` neither succeeds nor fails."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: the queue fills and stays full
        address = listener.getsockname()
        fillers = []
        for _ in range(FILL):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        # Bounded wait until the kernel queued one: from then on the queue is full.
        _, connected, _ = select.select([], fillers, [], LONG)
        assert connected, "no connection to the listener completed"
        probe = stack.enter_context(socket.socket())
        probe.settimeout(0.2)
        try:
            probe.connect(address)
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections beyond a full listen queue")
        yield address[1]


# -- each timeout fires at its setting ----------------------------------------------------


def fires(tmp_path: Path, url: str, kind: str, setting: float, **kw: float) -> dict[str, Any]:
    """Run one turn against ``url`` until ``kind`` is shown to fire at ``setting``."""
    return assert_fires(kind, setting, lambda: run_one(tmp_path, url, timeouts(**kw)))


def test_connect_timeout(tmp_path: Path) -> None:
    with unanswered_port() as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        record = fires(tmp_path, url, "connect_timeout", SETTING, connect=SETTING)
    assert record["attempts"][0]["http_status"] is None


def test_first_byte_timeout_before_the_headers(tmp_path: Path) -> None:
    with LocalServer(faults=FaultPlan.parse(f"stall={LONG}")) as server:
        fires(tmp_path, server.url, "first_byte_timeout", SETTING, first_byte=SETTING)


def test_first_byte_timeout_after_the_headers(tmp_path: Path) -> None:
    # The headers come at once; the first token never does.
    with LocalServer(first_token_delay=LONG) as server:
        fires(tmp_path, server.url, "first_byte_timeout", SETTING, first_byte=SETTING)


def test_first_byte_timeout_counts_from_the_request_not_from_the_headers(
    tmp_path: Path,
) -> None:
    with LocalServer(first_token_delay=LONG, faults=FaultPlan.parse("stall=0.3")) as server:
        fires(tmp_path, server.url, "first_byte_timeout", SETTING, first_byte=SETTING)


def test_idle_timeout(tmp_path: Path) -> None:
    with LocalServer(faults=FaultPlan.parse(f"stall_between={LONG}")) as server:
        record = fires(tmp_path, server.url, "idle_timeout", SETTING, idle=SETTING)
    assert record["attempts"][0]["partial_reply"] == "turn "  # the one chunk before the stall


def test_idle_timeout_longer_than_the_first_byte_timeout(tmp_path: Path) -> None:
    idle = 0.7
    with LocalServer(faults=FaultPlan.parse(f"stall_between={LONG}")) as server:
        fires(tmp_path, server.url, "idle_timeout", idle, first_byte=SETTING, idle=idle)


def test_turn_timeout_while_bytes_trickle(tmp_path: Path) -> None:
    # A token every 0.1 s: neither first-byte nor idle can fire, the reply needs > 1 s.
    with LocalServer(token_delay=0.1) as server:
        record = fires(tmp_path, server.url, "turn_timeout", SETTING, turn=SETTING)
    assert record["attempts"][0]["partial_reply"].startswith("turn 1 of")


def test_turn_timeout_shorter_than_the_first_byte_timeout(tmp_path: Path) -> None:
    with LocalServer(faults=FaultPlan.parse(f"stall={LONG}")) as server:
        fires(tmp_path, server.url, "turn_timeout", SETTING, turn=SETTING)


def test_turn_timeout_shorter_than_the_connect_timeout(tmp_path: Path) -> None:
    with unanswered_port() as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        fires(tmp_path, url, "turn_timeout", SETTING, turn=SETTING)


def test_a_timeout_after_the_headers_keeps_the_status(tmp_path: Path) -> None:
    with LocalServer(faults=FaultPlan.parse(f"stall_between={LONG}")) as server:
        _, record = run_one(tmp_path, server.url, timeouts(idle=SETTING))
    assert record["error"]["type"] == "idle_timeout"
    assert record["attempts"][0]["http_status"] == 200
    assert record["error"]["http_status"] == 200


# -- and not before ------------------------------------------------------------------------


def test_a_slow_steady_reply_trips_no_timeout(tmp_path: Path) -> None:
    """Every gap is under the first-byte and idle settings; the whole reply is well over."""
    limit, gap = 0.4, 0.06
    with LocalServer(first_token_delay=0.15, token_delay=gap) as server:
        _, record = run_one(tmp_path, server.url, timeouts(first_byte=limit, idle=limit))
    assert record["status"] == "ok", record["error"]
    assert record["timing"]["max_gap_ms"] >= gap * 1000 / 2
    assert record["timing"]["duration_ms"] > 1.5 * limit * 1000


# -- the command-line flags reach the client ------------------------------------------------

FLAGS = {
    "connect_timeout": ("--connect-timeout", []),
    "first_byte_timeout": ("--first-byte-timeout", ["--local-faults", f"stall={LONG}"]),
    "idle_timeout": ("--idle-timeout", ["--local-faults", f"stall_between={LONG}"]),
    "turn_timeout": ("--turn-timeout", ["--local-token-delay", "0.1"]),
}


@pytest.mark.parametrize("kind", list(FLAGS))
def test_cli_flag(tmp_path: Path, kind: str) -> None:
    flag, server_args = FLAGS[kind]
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text("name: s\nturns: [hi]\n", encoding="utf-8")
    args = [
        *("run", str(scenario_file), flag, str(SETTING), "--max-attempts", "1"),
        *("--json", "--progress", "off", "--out", str(tmp_path / "out")),
    ]
    run_dirs: list[Path] = []

    def once() -> tuple[float | None, dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args, *target],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 3, proc.stderr
        run_dirs.append(Path(json.loads(proc.stdout)["run_dir"]))
        (record,) = [json.loads(line) for line in (run_dirs[-1] / "transcript.jsonl").open()]
        return None, record  # the process's own time includes its start-up

    with ExitStack() as stack:
        if kind == "connect_timeout":
            port = stack.enter_context(unanswered_port())
            target = ["--endpoint", f"http://127.0.0.1:{port}/v1"]
        else:
            target = ["--local", *server_args]
        assert_fires(kind, SETTING, once)
    recorded = json.loads((run_dirs[-1] / "run.json").read_text(encoding="utf-8"))
    assert recorded["settings"]["timeouts"][kind.removesuffix("_timeout")] == SETTING
