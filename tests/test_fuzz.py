"""Bounded fuzzing in CI: hypothesis with many examples on the parts that meet untrusted bytes.

The number of examples per target is ``FUZZ_EXAMPLES`` (default 2,000); each
target also stops after ``FUZZ_SECONDS`` (default 20) of generation.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.accumulate import Accumulator
from runner.errors import ScenarioError, TurnError
from runner.scenario import load_file
from runner.sse import SSEDecoder

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Budget:
    def __init__(self) -> None:
        self.end = time.monotonic() + SECONDS
        self.count = 0

    def spent(self) -> bool:
        self.count += 1
        return time.monotonic() > self.end


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "delta",
                    "content",
                    "error",
                    "index",
                    "finish_reason",
                    "usage",
                    "tool_calls",
                    "reasoning",
                    "conversation",
                    "function",
                    "arguments",
                    "message",
                    "detail",
                    "id",
                    "model",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
_event_lines = st.one_of(
    _json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
    st.sampled_from([b"data: [DONE]\n\n", b": ping\n\n", b"event: error\n", b"\r\n", b"\r"]),
    st.binary(max_size=40),
)
SSE_BUDGET = Budget()


@FUZZ
@given(st.lists(_event_lines, max_size=12), st.integers(1, 64))
def test_stream_decoding_raises_only_turn_errors(parts: list[bytes], size: int) -> None:
    if SSE_BUDGET.spent():
        return
    body = b"".join(parts)
    decoder = SSEDecoder()
    acc = Accumulator()
    try:
        for i in range(0, len(body), size):
            for event in decoder.feed(body[i : i + size]):
                acc.add_event(event)
        for event in decoder.flush():
            acc.add_event(event)
        reply = acc.finish()
        assert isinstance(reply.text, str)
    except TurnError:
        pass


_yaml_tokens = st.sampled_from(
    [
        "name:",
        "turns:",
        "scenarios:",
        "defaults:",
        "- ",
        "user:",
        "history:",
        "params:",
        "system:",
        "provider:",
        "model:",
        "&a",
        "*a",
        "!!python/object:os.system",
        "<<:",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\n",
        "  ",
        "\t",
        "'",
        '"',
        "#",
        "---",
        "...",
        "? ",
        "|",
        ">",
        "~",
        "null",
        "1",
        "-1.5e3",
        "yes",
        "client",
        "server",
        "hello",
        "\x00",
        "\ufeff",
        "é",
    ]
)
LOADER_BUDGET = Budget()
FUZZ_DIR = Path(tempfile.mkdtemp(prefix="convo-runner-fuzz-"))


@FUZZ
@given(
    st.one_of(
        st.lists(_yaml_tokens, max_size=40).map("".join).map(str.encode), st.binary(max_size=200)
    )
)
def test_loader_raises_only_scenario_errors(data: bytes) -> None:
    if LOADER_BUDGET.spent():
        return
    path = FUZZ_DIR / "s.yaml"
    path.write_bytes(data)
    try:
        for sc in load_file(path):
            assert sc.turns and all(t.user.strip() for t in sc.turns)
    except ScenarioError as exc:
        assert str(exc).startswith(str(path))
