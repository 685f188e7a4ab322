"""Fault plans: the spec parser, rule selection, and every fault kind on the wire."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import UsageError
from runner.faults import FaultContext, FaultPlan, FaultRule
from runner.server import LocalServer

DEADLINE = 5.0  # seconds; bounds every socket read in this file


# -- a raw HTTP/1.1 client that keeps every byte -----------------------------------


class Raw:
    def __init__(self, status: int, headers: dict[str, str], first_byte_at: float) -> None:
        self.status = status
        self.headers = headers
        self.first_byte_at = first_byte_at
        self.chunks: list[bytes] = []
        self.arrivals: list[float] = []
        self.complete = False  # chunked terminator or full Content-Length seen

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def data_lines(self) -> list[bytes]:
        return [e[len(b"data: ") :] for e in self.body.split(b"\n\n") if e]

    def contents(self) -> str:
        out = []
        for line in self.data_lines:
            if line != b"[DONE]":
                payload = json.loads(line)
                if payload.get("choices"):
                    out.append(payload["choices"][0]["delta"].get("content") or "")
        return "".join(out)


def post(port: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Raw:
    data = json.dumps(body).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        with sock.makefile("rb") as reader:
            status_line = reader.readline(65536)
            if not status_line:
                raise ConnectionAbortedError("closed before the status line")
            raw = Raw(int(status_line.split()[1]), {}, time.monotonic())
            while (line := reader.readline(65536)) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                raw.headers[name.strip().lower()] = value.strip()
            if raw.headers.get("transfer-encoding") != "chunked":
                length = int(raw.headers["content-length"])
                raw.chunks.append(reader.read(length))
                raw.complete = len(raw.chunks[0]) == length
                return raw
            for _ in range(100_000):  # bounded; the socket timeout bounds the time
                size_line = reader.readline(65536)
                if not size_line:
                    return raw  # EOF before the terminating chunk
                size = int(size_line, 16)
                if size == 0:
                    raw.complete = reader.readline(65536) == b"\r\n"
                    return raw
                raw.chunks.append(reader.read(size))
                raw.arrivals.append(time.monotonic())
                assert reader.read(2) == b"\r\n"
    raise AssertionError("too many chunks")


def chat(
    text: str = "hi", *, cid: str | None = "c0nv-1234", users: int = 1, stream: bool = True
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(1, users):
        messages += [
            {"role": "user", "content": f"earlier {i}"},
            {"role": "assistant", "content": "ok"},
        ]
    messages.append({"role": "user", "content": text})
    body: dict[str, Any] = {"model": "m", "stream": stream, "messages": messages}
    if cid is not None:
        body["conversation_id"] = cid
    return body


def serve(spec: str, **kwargs: Any) -> LocalServer:
    return LocalServer(faults=FaultPlan.parse(spec), **kwargs)


# -- the parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("turn=2,attempt=1:status=503", "turn=2,attempt=1:status=503"),
        ("turn=2, attempt=1 : status=503", "turn=2,attempt=1:status=503"),
        ("status=503,turn=2,attempt=1", "turn=2,attempt=1:status=503"),
        ("p=0.1,seed=7:reset", "p=0.1,seed=7:reset"),
        ("p=0.25:reset", "p=0.25,seed=0:reset"),
        ("status=429,retry_after=2", "status=429,retry_after=2"),
        ("status=429,retry_after_date=5", "status=429,retry_after_date=5"),
        (
            "status=503,retry_after_ms=250,message=busy",
            "status=503,retry_after_ms=250,message=busy",
        ),
        ("drop", "drop_after=1"),
        ("drop_after=3", "drop_after=3"),
        ("drop,after=0", "drop_after=0"),
        ("inband_after=2,done", "inband_after=2,done"),
        (
            "conversation=ab12,every=3,times=2:malformed",
            "conversation=ab12,every=3,times=2:malformed_after=1",
        ),
        ("bad_utf8_after=4", "bad_utf8_after=4"),
        ("huge_line,size=2048", "huge_line_after=1,size=2048"),
        ("html", "html"),
        ("EMPTY", "empty"),
        ("no_done", "no_done"),
        ("stall=1.5", "stall=1.5"),
        ("stall_between=0.5", "stall_between=0.5"),
        ("stall=0.2,drop_after=2", "drop_after=2,stall=0.2"),
    ],
)
def test_parse_accepts_and_canonicalises(spec: str, canonical: str) -> None:
    plan = FaultPlan.parse(spec)
    assert len(plan.rules) == 1
    assert str(plan) == canonical
    assert FaultPlan.parse(canonical).rules == plan.rules


def test_parse_fields_and_several_rules() -> None:
    plan = FaultPlan.parse("turn=2,attempt=1:status=503; p=0.1,seed=7:reset\nturn=3:inband_after=2")
    first, second, third = plan.rules
    assert (first.kind, first.turn, first.attempt, first.status) == ("status", 2, 1, 503)
    assert (second.kind, second.p, second.seed) == ("reset", 0.1, 7)
    assert (third.kind, third.after, third.turn) == ("inband", 2, 3)
    assert str(plan) == "turn=2,attempt=1:status=503; p=0.1,seed=7:reset; turn=3:inband_after=2"
    assert not FaultPlan.parse("  ;  ")
    assert FaultPlan.parse("  ;  ").choose(FaultContext("x", 1, 1)) is None


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("turn=x:reset", "turn must be a whole number, got 'x'"),
        ("turn=0:reset", "turn must be at least 1"),
        ("attempt=1.5:reset", "attempt must be a whole number"),
        ("p=1.5:reset", "p must be between 0 and 1"),
        ("p=nan:reset", "p must be a finite number"),
        ("stall=-1", "stall must be at least 0"),
        ("status=200", "status must be between 400 and 599"),
        ("status=503,reset", "one action per rule"),
        ("turn=2", "no action"),
        ("tunr=2:reset", "unknown key 'tunr'"),
        ("reset=1", "'reset' takes no value"),
        ("status", "'status' needs a value"),
        ("turn=2,,reset", "empty item"),
        ("turn=2,turn=3:reset", "'turn' given twice"),
        ("seed=4:reset", "'seed' only makes sense with 'p'"),
        ("after=2:reset", "'after' only applies to"),
        ("retry_after=2:reset", "'retry_after' does not apply to 'reset'"),
        ("status=429,retry_after=1,retry_after_date=2", "not both"),
        ("done:drop", "'done' does not apply to 'drop'"),
        ("size=10:malformed", "'size' does not apply to 'malformed'"),
    ],
)
def test_parse_errors_are_one_line_usage_errors(spec: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        FaultPlan.parse(f"status=500; {spec}")
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert message.startswith(f"fault rule 2 ({spec!r})")


@given(
    turn=st.none() | st.integers(1, 50),
    attempt=st.none() | st.integers(1, 5),
    p=st.none() | st.floats(0, 1, allow_nan=False),
    seed=st.integers(0, 2**31),
    kind=st.sampled_from(["reset", "html", "empty", "no_done", "drop", "inband", "bad_utf8"]),
    after=st.integers(0, 30),
    stall=st.floats(0, 10, allow_nan=False),
)
def test_canonical_form_round_trips(
    turn: int | None,
    attempt: int | None,
    p: float | None,
    seed: int,
    kind: str,
    after: int,
    stall: float,
) -> None:
    items = [
        f"{k}={v!r}" for k, v in (("turn", turn), ("attempt", attempt), ("p", p)) if v is not None
    ]
    if p is not None:
        items.append(f"seed={seed}")
    items.append(f"{kind}_after={after}" if kind in ("drop", "inband", "bad_utf8") else kind)
    if stall:
        items.append(f"stall={stall!r}")
    rule = FaultPlan.parse(",".join(items)).rules[0]
    again = FaultPlan.parse(str(rule)).rules[0]
    assert (again.kind, again.turn, again.attempt, again.seed) == (
        rule.kind,
        rule.turn,
        rule.attempt,
        rule.seed,
    )
    # %g keeps six significant digits in the canonical text; floats stay close.
    assert (
        again.p == pytest.approx(rule.p, rel=1e-5, abs=1e-9) if p is not None else again.p is None
    )
    assert again.stall == pytest.approx(rule.stall, rel=1e-5, abs=1e-9)


def test_from_file_accepts_strings_and_mappings(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(
        "- 'turn=2,attempt=1:status=503'\n"
        "- {turn: 3, status: 429, retry_after: 1}\n"
        "- conversation: ab12\n"
        "  reset: true\n"
        "- {inband_after: 2, done: true, message: 'a, b: c'}\n"
        "- {stall: 0.5, html: false}\n",
        encoding="utf-8",
    )
    plan = FaultPlan.from_file(path)
    assert [str(r) for r in plan.rules] == [
        "turn=2,attempt=1:status=503",
        "turn=3:status=429,retry_after=1",
        "conversation=ab12:reset",
        "inband_after=2,message=a, b: c,done",
        "stall=0.5",
    ]
    assert plan.rules[3].message == "a, b: c"  # the mapping form allows any text
    assert str(FaultPlan.from_option(f"@{path}")) == str(plan)
    assert str(FaultPlan.from_option("reset")) == "reset"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- reset\n- {turn: 2}\n", ":2: fault rule 2: no action"),
        (
            "- reset\n\n- 'tunr=1:reset'\n",
            ":3: fault rule 2: fault rule 1 ('tunr=1:reset'): unknown key",
        ),
        ("- 'reset; html'\n", "one rule per list item"),
        ("- 42\n", "expected a rule string or a mapping, got int"),
        ("- {status: [1, 2]}\n", "status: expected a single value"),
        ("turn: 2\n", "expected a YAML list of fault rules"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_from_file_errors_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        FaultPlan.from_file(path)
    assert str(info.value).startswith(str(path))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_from_file_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read fault file .*check the path"):
        FaultPlan.from_file(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert not FaultPlan.from_file(empty)


# -- rule selection (no network) --------------------------------------------------------


def fires(plan: FaultPlan, cid: str | None, turn: int, attempt: int) -> str | None:
    rule = plan.choose(FaultContext(cid, turn, attempt))
    return None if rule is None else str(rule)


def test_choose_targets_turn_attempt_and_conversation() -> None:
    plan = FaultPlan.parse("turn=2,attempt=1:status=503; conversation=ab:reset")
    assert fires(plan, "zz", 1, 1) is None
    assert fires(plan, "zz", 2, 1) == "turn=2,attempt=1:status=503"
    assert fires(plan, "zz", 2, 2) is None
    assert fires(plan, "abc", 2, 1) == "turn=2,attempt=1:status=503"  # first rule wins
    assert fires(plan, "abc", 3, 1) == "conversation=ab:reset"
    assert fires(plan, None, 3, 1) is None


def test_choose_every_and_times() -> None:
    plan = FaultPlan.parse("every=3,times=2:reset")
    hits = [fires(plan, "c", i, 1) is not None for i in range(1, 13)]
    assert hits == [False, False, True, False, False, True] + [False] * 6


def test_probability_is_reproducible_from_the_seed() -> None:
    def pattern(spec: str) -> list[bool]:
        plan = FaultPlan.parse(spec)
        return [fires(plan, "c", i, 1) is not None for i in range(1, 401)]

    first = pattern("p=0.3,seed=7:status=503")
    assert first == pattern("p=0.3,seed=7:status=503")
    assert first != pattern("p=0.3,seed=8:status=503")
    assert 60 < sum(first) < 180  # about 120 of 400
    assert not any(pattern("p=0:reset")) and all(pattern("p=1:reset"))


def test_choose_is_thread_safe_with_times() -> None:
    plan = FaultPlan.parse("times=50:reset")
    counts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = sum(fires(plan, "c", 1, 1) is not None for _ in range(100))
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert sum(counts) == 50


# -- turns and attempts as the server sees them ----------------------------------------


def test_turn_two_first_attempt_only_gets_a_503() -> None:
    with serve("turn=2,attempt=1:status=503") as srv:
        statuses = [
            post(srv.port, chat("one", users=1)).status,
            post(srv.port, chat("two", users=2)).status,
            post(srv.port, chat("two", users=2)).status,  # the retry
            post(srv.port, chat("three", users=3)).status,
        ]
        recorded = [(r.turn, r.attempt, r.fault) for r in srv.requests]
    assert statuses == [200, 503, 200, 200]
    assert recorded == [
        (1, 1, None),
        (2, 1, "turn=2,attempt=1:status=503"),
        (2, 2, None),
        (3, 1, None),
    ]


def test_attempt_header_overrides_the_fingerprint() -> None:
    with serve("attempt=2:status=500") as srv:
        first = post(srv.port, chat("same"), {"x-runner-attempt": "1"}).status
        second = post(srv.port, chat("same"), {"x-runner-attempt": "1"}).status  # a new turn
        retry = post(srv.port, chat("other"), {"x-runner-attempt": "2"}).status
        recorded = [(r.turn, r.attempt) for r in srv.requests]
    assert [first, second, retry] == [200, 200, 500]
    assert recorded == [(1, 1), (2, 1), (2, 2)]


def test_conversations_are_tracked_separately() -> None:
    with serve("turn=2:status=502") as srv:
        a1 = post(srv.port, chat("a1", cid="aaaa", users=1)).status
        b1 = post(srv.port, chat("b1", cid="bbbb", users=1)).status
        a2 = post(srv.port, chat("a2", cid="aaaa", users=2)).status
        b2 = post(srv.port, chat("b2", cid="bbbb", users=2)).status
    assert [a1, b1, a2, b2] == [200, 200, 502, 502]


def test_seeded_probability_is_reproducible_on_the_wire() -> None:
    def run(spec: str) -> list[int]:
        with serve(spec) as srv:
            return [post(srv.port, chat(f"t{i}", users=i)).status for i in range(1, 31)]

    first = run("p=0.5,seed=7:status=503")
    assert first == run("p=0.5,seed=7:status=503")
    assert set(first) == {200, 503}
    assert first != run("p=0.5,seed=11:status=503")


# -- every kind on the wire --------------------------------------------------------------


def test_status_5xx_has_an_error_body() -> None:
    with serve("status=503") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 503
    assert raw.headers["content-type"] == "application/json"
    error = json.loads(raw.body)["error"]
    assert "503" in error["message"]
    assert error["code"] == 503
    assert "retry-after" not in raw.headers


@pytest.mark.parametrize("code", [500, 502, 504])
def test_other_5xx_statuses(code: int) -> None:
    with serve(f"status={code},message=upstream down") as srv:
        raw = post(srv.port, chat())
    assert raw.status == code
    assert json.loads(raw.body)["error"]["message"] == "upstream down"


def test_status_429_with_retry_after_seconds_and_ms() -> None:
    with serve("status=429,retry_after=2,retry_after_ms=1500") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 429
    assert raw.headers["retry-after"] == "2"
    assert raw.headers["retry-after-ms"] == "1500"
    assert json.loads(raw.body)["error"]["type"] == "rate_limit_error"


def test_status_429_with_retry_after_as_an_http_date() -> None:
    with serve("status=429,retry_after_date=30") as srv:
        raw = post(srv.port, chat())
    when = parsedate_to_datetime(raw.headers["retry-after"]).timestamp()
    assert 20 < when - time.time() <= 31


def test_status_4xx_has_a_gpt4free_detail_body() -> None:
    with serve("status=400,message=bad model") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 400
    assert json.loads(raw.body)["detail"][0]["msg"] == "bad model"


def test_reset_before_headers() -> None:
    with serve("reset") as srv, pytest.raises(ConnectionResetError):
        post(srv.port, chat())
    assert srv.requests[0].fault == "reset"  # it reached the server


def test_drop_after_three_chunks() -> None:
    with serve("drop_after=3") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 200
    assert not raw.complete  # no terminating chunk
    assert len(raw.chunks) == 3
    assert raw.contents() == "turn 1 of "
    assert b"[DONE]" not in raw.body and b'finish_reason": "stop' not in raw.body


def test_drop_after_zero_sends_headers_only() -> None:
    with serve("drop_after=0") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 200 and raw.chunks == [] and not raw.complete


def test_stall_before_the_first_byte() -> None:
    with serve("stall=0.2") as srv:
        started = time.monotonic()
        raw = post(srv.port, chat())
    assert 0.19 <= raw.first_byte_at - started < 3.0
    assert raw.complete and raw.data_lines[-1] == b"[DONE]"


def test_stall_between_chunks() -> None:
    with serve("stall_between=0.03") as srv:
        raw = post(srv.port, chat())
    gaps = len(raw.arrivals) - 1
    assert gaps >= 10
    assert 0.03 * gaps * 0.9 <= raw.arrivals[-1] - raw.arrivals[0] < 5.0
    assert raw.complete


def test_stop_interrupts_a_long_stall() -> None:
    srv = serve("stall=30").start()
    errors: list[BaseException] = []
    arrived = threading.Event()

    def client() -> None:
        try:
            post(srv.port, chat())
        except BaseException as exc:  # the server closes without answering
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while not srv.requests and time.monotonic() < deadline:
        arrived.wait(0.01)
    assert srv.requests
    started = time.monotonic()
    srv.stop()
    thread.join(DEADLINE)
    assert time.monotonic() - started < 2.0
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], (ConnectionError, ValueError, IndexError))


def test_inband_error_then_end_without_done() -> None:
    with serve("inband_after=2,message=provider failed") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 200 and raw.complete
    *content, error_line = raw.data_lines
    assert len(content) == 2
    assert raw.contents().startswith("turn 1 ")
    assert json.loads(error_line)["error"] == {"message": "provider failed"}


def test_inband_error_followed_by_done_like_recent_gpt4free() -> None:
    with serve("inband,done") as srv:
        raw = post(srv.port, chat())
    assert raw.data_lines[-1] == b"[DONE]"
    assert "error" in json.loads(raw.data_lines[-2])
    assert len(raw.data_lines) == 3


def test_malformed_json_line_then_the_stream_continues() -> None:
    with serve("malformed_after=1") as srv:
        raw = post(srv.port, chat())
    bad = raw.data_lines[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    assert bad.startswith(b"{")
    assert raw.data_lines[-1] == b"[DONE]" and raw.complete


def test_bad_utf8_data_line() -> None:
    with serve("bad_utf8_after=2") as srv:
        raw = post(srv.port, chat())
    bad = raw.data_lines[2]
    with pytest.raises(UnicodeDecodeError):
        bad.decode("utf-8")
    assert raw.data_lines[-1] == b"[DONE]"


def test_huge_line_is_one_mebibyte_data_line() -> None:
    with serve("huge_line_after=1") as srv:
        raw = post(srv.port, chat())
    sizes = [len(line) for line in raw.data_lines]
    big = [i for i, size in enumerate(sizes) if size >= 1024 * 1024]
    assert big == [1]
    assert b"\n" not in raw.data_lines[1]
    assert json.loads(raw.data_lines[1])["choices"][0]["delta"]["content"] == "x" * 1024 * 1024


def test_html_page_with_status_200() -> None:
    with serve("html") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 200
    assert raw.headers["content-type"].startswith("text/html")
    assert raw.body.startswith(b"<!DOCTYPE html>")


def test_empty_200_body() -> None:
    with serve("empty") as srv:
        raw = post(srv.port, chat())
    assert raw.status == 200 and raw.body == b"" and raw.complete
    assert raw.headers["content-type"].startswith("text/event-stream")


def test_no_done_and_no_finish_reason() -> None:
    with serve("no_done") as srv:
        raw = post(srv.port, chat())
    assert raw.complete
    payloads = [json.loads(line) for line in raw.data_lines]  # no [DONE] to skip
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads)
    assert raw.contents().endswith("you said: hi")


def test_stall_then_drop_combined() -> None:
    with serve("stall=0.1,drop_after=2") as srv:
        started = time.monotonic()
        raw = post(srv.port, chat())
    assert raw.first_byte_at - started >= 0.09
    assert len(raw.chunks) == 2 and not raw.complete


# -- faults on non-streaming requests --------------------------------------------------


def test_non_streaming_variants() -> None:
    spec = ";".join(
        f"turn={i}:{kind}"
        for i, kind in enumerate(["drop", "inband", "malformed", "bad_utf8", "no_done"], 1)
    )
    with serve(spec) as srv:
        raws = [post(srv.port, chat(f"t{i}", users=i, stream=False)) for i in range(1, 6)]
        normal = post(srv.port, chat("t6", users=6, stream=False))
    drop, inband, malformed, bad, no_done = raws
    assert not drop.complete and 0 < len(drop.body) < int(drop.headers["content-length"])
    assert json.loads(inband.body)["error"]["message"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.body)
    with pytest.raises(UnicodeDecodeError):
        bad.body.decode("utf-8")
    assert json.loads(no_done.body)["choices"][0]["finish_reason"] is None
    assert json.loads(normal.body)["choices"][0]["finish_reason"] == "stop"


def test_faults_do_not_apply_to_invalid_requests() -> None:
    with serve("status=503") as srv:
        raw = post(srv.port, {"model": "m"})
    assert raw.status == 422


def test_a_rule_object_is_what_the_server_applies() -> None:
    plan = FaultPlan([FaultRule(kind="status", status=504, turn=1)])
    with LocalServer(faults=plan) as srv:
        assert post(srv.port, chat()).status == 504
        assert post(srv.port, chat("next", users=2)).status == 200
    assert srv.faults is plan


def test_handle_is_delivered_only_when_the_final_chunk_is_written() -> None:
    with serve("turn=2,attempt=1:drop_after=2") as srv:
        first = post(srv.port, chat("one", users=1))
        handle = json.loads(first.data_lines[-2])["conversation"]
        body = {**chat("two", users=2), "conversation": handle}
        dropped = post(srv.port, body)
        retried = post(srv.port, body)
    assert not dropped.complete
    # The dropped attempt never delivered its handle, so the old one is still current.
    assert "received 3 messages, handle ok; you said: two" in retried.contents()
    assert retried.contents().startswith("turn 3 ")  # n counts every request received
