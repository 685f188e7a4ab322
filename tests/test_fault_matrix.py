"""The fault matrix: every fault of the built-in endpoint, through the run engine.

``MATRIX`` below is the table ``docs/fault-matrix.md`` shows (a test keeps the
two identical). Each row is one fault, run twice against the same scenario set:

* **transient** — ``turn=2,attempt=1,times=1:<spec>``: the first attempt at
  turn 2 of the faulted scenario fails, the retry is clean;
* **persistent** — ``turn=2,times=<attempts>:<spec>``: every attempt at turn 2
  of the faulted scenario fails.

The scenario set is two three-turn scenarios run one after the other on one
worker, so they share the client and its keep-alive connections: ``faulted``
first, then ``other``. ``times`` confines the rule to the faulted scenario, so
``other`` sends its own turn 2 to the same server after the fault and must come
out clean. That also checks the attempt count from the other side: an attempt
too few would leave the rule armed for ``other``'s turn 2, an attempt too many
would find the rule spent and make the faulted turn succeed.

For each case: the turn's status, attempts (as the transcript records them and
as the server counted them), the waits between attempts (the sleep is injected
and records them; ``rand`` is fixed), that the reply is exactly the echo of the
successful attempt while each failed attempt keeps its own text in
``partial_reply``, that no failed text reaches the next turn's history, that a
turn which failed for good skips the scenario's later turns, that ``other`` is
untouched, and the run's exit status. A few cases also go through
``runner run --local --local-faults`` in a subprocess, to prove the wiring.

Run ``python -m tests.test_fault_matrix`` to print the markdown table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner.client import Timeouts
from runner.engine import Run, RunSettings
from runner.faults import HUGE_LINE_SIZE, FaultPlan
from runner.retry import RetryPolicy
from runner.scenario import Scenario, Turn
from runner.server import LocalServer, RecordedRequest

MAX_ATTEMPTS = 3
RAND = 0.5  # the injected jitter draw: waits are RAND * min(cap, base * 2**(n-1))
TIMEOUTS = Timeouts(connect=5.0, first_byte=5.0, idle=5.0, turn=30.0)
# Small enough to keep the module fast, large enough that a clean reply from the
# local endpoint never trips them on a busy machine; the stalls are well past them.
SHORT = Timeouts(connect=5.0, first_byte=0.3, idle=0.3, turn=30.0)
STALL = 0.8


@dataclass(frozen=True)
class Outcome:
    """How turn 2 of the faulted scenario ends, and the run with it."""

    status: str  # the turn's final status
    attempts: int
    exit: int  # the run's exit status

    def cell(self, *, exit_code: bool) -> str:
        return f"{self.status}, {self.attempts}" + (f", exit {self.exit}" if exit_code else "")


RECOVERS = Outcome("ok", 2, 0)  # a retryable fault once: the retry succeeds
GIVES_UP = Outcome("error", MAX_ATTEMPTS, 3)  # a retryable fault every time
TRIED_ONCE = Outcome("error", 1, 3)  # not retryable: one attempt, transient or not
HARMLESS = Outcome("ok", 1, 0)  # not a failure at all


@dataclass(frozen=True)
class Fault:
    id: str  # the pytest id
    fault: str  # what goes wrong, for the docs
    spec: str  # the fault action in the ``--local-faults`` grammar
    error: str | None  # the transcript's error type; None: the turn succeeds
    transient: Outcome
    persistent: Outcome
    http: int | None  # the http_status a failed attempt records
    says: str = ""  # part of the error message
    # What the server asks to wait (Retry-After, exact or a range); None: backoff.
    retry_after: float | tuple[float, float] | None = None
    kept: int | None = 0  # content chunks a failed attempt receives; None: all of them
    insert: str = ""  # what the fault puts into the text after chunk 3
    timeouts: Timeouts = field(default=TIMEOUTS)


MATRIX: tuple[Fault, ...] = (
    # -- HTTP statuses before any byte of the reply --------------------------------------
    Fault("429", "429, no Retry-After", "status=429", "http_status",
          RECOVERS, GIVES_UP, 429, "injected fault: HTTP 429"),
    Fault("429-retry-after", "429, Retry-After: 2 (seconds)", "status=429,retry_after=2",
          "http_status", RECOVERS, GIVES_UP, 429, "HTTP 429", retry_after=2.0),
    Fault("429-retry-after-date", "429, Retry-After as an HTTP date 3 s ahead",
          "status=429,retry_after_date=3", "http_status", RECOVERS, GIVES_UP, 429, "HTTP 429",
          retry_after=(1.5, 3.0)),
    Fault("429-retry-after-ms", "429, retry-after-ms: 1500", "status=429,retry_after_ms=1500",
          "http_status", RECOVERS, GIVES_UP, 429, "HTTP 429", retry_after=1.5),
    Fault("503-retry-after-0", "503, Retry-After: 0", "status=503,retry_after=0",
          "http_status", RECOVERS, GIVES_UP, 503, "HTTP 503", retry_after=0.0),
    Fault("503-retry-after-600", "503, Retry-After: 600 (capped at 120 s)",
          "status=503,retry_after=600", "http_status", RECOVERS, GIVES_UP, 503, "HTTP 503",
          retry_after=120.0),
    Fault("500", '500, `{"error": ...}` body', "status=500", "http_status",
          RECOVERS, GIVES_UP, 500, "injected fault: HTTP 500 Internal Server Error"),
    Fault("502", '502, `{"error": ...}` body', "status=502", "http_status",
          RECOVERS, GIVES_UP, 502, "injected fault: HTTP 502 Bad Gateway"),
    Fault("503", '503, `{"error": ...}` body', "status=503", "http_status",
          RECOVERS, GIVES_UP, 503, "injected fault: HTTP 503 Service Unavailable"),
    Fault("504", '504, `{"error": ...}` body', "status=504", "http_status",
          RECOVERS, GIVES_UP, 504, "injected fault: HTTP 504 Gateway Timeout"),
    Fault("408", '408, `{"detail": [...]}` body', "status=408", "http_status",
          RECOVERS, GIVES_UP, 408, "body: injected fault: HTTP 408"),
    Fault("409", '409, `{"detail": [...]}` body', "status=409", "http_status",
          RECOVERS, GIVES_UP, 409, "body: injected fault: HTTP 409"),
    Fault("400", '400, `{"detail": [...]}` body', "status=400", "http_status",
          TRIED_ONCE, TRIED_ONCE, 400, "body: injected fault: HTTP 400 Bad Request"),
    Fault("401", '401, `{"detail": [...]}` body', "status=401", "http_status",
          TRIED_ONCE, TRIED_ONCE, 401, "body: injected fault: HTTP 401 Unauthorized"),
    Fault("404", '404, `{"detail": [...]}` body', "status=404", "http_status",
          TRIED_ONCE, TRIED_ONCE, 404, "body: injected fault: HTTP 404 Not Found"),
    Fault("422", '422, gpt4free\'s `{"detail": [...]}` body', "status=422", "http_status",
          TRIED_ONCE, TRIED_ONCE, 422, "body: injected fault: HTTP 422 Unprocessable"),
    # -- the connection ------------------------------------------------------------------
    Fault("reset", "connection reset before the headers", "reset", "read_error",
          RECOVERS, GIVES_UP, None, "closed before a response"),
    Fault("drop", "connection closed after 3 chunks", "drop_after=3", "read_error",
          RECOVERS, GIVES_UP, 200, "mid-stream after 3 chunk(s)", kept=3),
    Fault("drop-0", "connection closed after the headers", "drop_after=0", "read_error",
          RECOVERS, GIVES_UP, 200, "mid-stream after 0 chunk(s)"),
    Fault("stall", f"stall {STALL:g} s before the first byte (first-byte timeout 0.3 s)",
          f"stall={STALL:g}", "first_byte_timeout", RECOVERS, GIVES_UP, None,
          "first-byte timeout", timeouts=SHORT),
    Fault("stall-between", f"stall {STALL:g} s between chunks (idle timeout 0.3 s)",
          f"stall_between={STALL:g}", "idle_timeout", RECOVERS, GIVES_UP, 200,
          "idle timeout", kept=1, timeouts=SHORT),
    # -- a 200 reply that is not a good reply --------------------------------------------
    Fault("inband", "in-band error after 3 chunks, then close without [DONE]",
          "inband_after=3", "in_band_error", RECOVERS, GIVES_UP, 200,
          "injected fault: in-band error after 3 chunks", kept=3),
    Fault("inband-done", "in-band error after 3 chunks, then [DONE]", "inband_after=3,done",
          "in_band_error", RECOVERS, GIVES_UP, 200, "in-band error", kept=3),
    Fault("malformed", "malformed JSON data line after 3 chunks", "malformed_after=3",
          "protocol_error", RECOVERS, GIVES_UP, 200, "event data is not JSON", kept=3),
    Fault("bad-utf8", "data line that is not UTF-8 after 3 chunks", "bad_utf8_after=3",
          "protocol_error", RECOVERS, GIVES_UP, 200, "not valid UTF-8",
          kept=None, insert="\ufffd\ufffd\ufffd("),  # the bytes ff fe c3 28, decoded with U+FFFD
    Fault("huge-line", "a valid 1 MiB data line after 3 chunks (lines are capped at 16 MiB)",
          "huge_line_after=3", None, HARMLESS, HARMLESS, 200, insert="x" * HUGE_LINE_SIZE),
    Fault("html", "an HTML page with status 200", "html", "protocol_error",
          RECOVERS, GIVES_UP, 200, "text/html, not an event stream"),
    Fault("empty", "an empty 200 body", "empty", "incomplete_stream",
          RECOVERS, GIVES_UP, 200, "without [DONE] or a finish_reason after 0 chunk"),
    Fault("no-done", "every chunk, but no finish_reason and no [DONE]", "no_done",
          "incomplete_stream", RECOVERS, GIVES_UP, 200, "without [DONE] or a finish_reason",
          kept=None),
)  # fmt: skip

MODES = ("transient", "persistent")
FAULTED = ("one", "two", "three")
OTHER = ("uno", "dos", "tres")
DOC = Path(__file__).resolve().parent.parent / "docs" / "fault-matrix.md"
README = DOC.parent.parent / "README.md"
SECTION = "## Reliability: the fault matrix"


def outcome(row: Fault, mode: str) -> Outcome:
    return row.transient if mode == "transient" else row.persistent


def plan(row: Fault, mode: str) -> str:
    """The fault plan of one case, in the ``--local-faults`` grammar."""
    if mode == "transient":
        return f"turn=2,attempt=1,times=1:{row.spec}"
    return f"turn=2,times={row.persistent.attempts}:{row.spec}"


def expected_waits(row: Fault, attempts: int) -> list[float | tuple[float, float]]:
    """The wait after each failed attempt but the last."""
    policy = RetryPolicy(max_attempts=MAX_ATTEMPTS)
    waits: list[float | tuple[float, float]] = []
    for n in range(1, attempts):
        if row.retry_after is None:
            waits.append(RAND * min(policy.cap, policy.base * 2.0 ** (n - 1)))
        else:
            waits.append(row.retry_after)
    return waits


def wait_matches(actual: float, expected: float | tuple[float, float]) -> bool:
    if isinstance(expected, tuple):
        return expected[0] <= actual <= expected[1]
    return actual == pytest.approx(expected, abs=1e-9)


# -- what the built-in endpoint says ------------------------------------------------------

_CHUNK = re.compile(r"\S+\s*")  # the endpoint sends one word (and its spaces) per chunk


def echo(n: int, cid: str, messages: int, note: str, user: str, insert: str = "") -> str:
    """The text the built-in endpoint streams for the ``n``-th request of a conversation."""
    text = (
        f"turn {n} of conversation {cid[:8]}: received {messages} messages{note}; you said: {user}"
    )
    if insert:
        chunks = _CHUNK.findall(text)
        text = "".join(chunks[:3]) + insert + "".join(chunks[3:])
    return text


def texts(n: int, cid: str, turn: int, user: str, after_fault: bool, insert: str = "") -> set[str]:
    """Every text request ``n`` (at ``turn``, client history) may get.

    The handle note is exact except right after a faulted attempt: a fault that
    still wrote the final chunk (``bad_utf8``; ``malformed`` or a stall, racing
    the client's close) counts its handle as delivered although the client threw
    that attempt away, so the next request's handle may be "stale".
    """
    if turn == 1:
        notes = [""]
    elif after_fault:
        notes = [", handle ok", ", handle stale"]
    else:
        notes = [", handle ok"]
    return {echo(n, cid, 2 * turn - 1, note, user, insert) for note in notes}


# -- running one case ---------------------------------------------------------------------


def scenario(name: str, turns: tuple[str, ...]) -> Scenario:
    return Scenario(
        name=name,
        file="matrix.yaml",
        line=1,
        turns=tuple(Turn(user=t, line=i + 2) for i, t in enumerate(turns)),
        sha256="0" * 64,
    )


def read(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def check_scenario(
    records: list[dict[str, Any]],
    row: Fault,
    result: Outcome | None,
    *,
    real_waits: bool = False,
) -> None:
    """The records of one scenario; ``result`` is turn 2's expected outcome (None: clean)."""
    users = OTHER if result is None else FAULTED
    assert [r["turn"] for r in records] == [1, 2, 3]
    assert [r["user"] for r in records] == list(users)
    cid = records[0]["conversation_id"]
    assert {r["conversation_id"] for r in records} == {cid}
    n = 0  # requests this conversation sent so far, as the endpoint counts them
    after_fault = False
    for rec in records:
        number = rec["turn"]
        attempts = rec["attempts"]
        if number == 2 and result is not None:
            assert (rec["status"], len(attempts)) == (result.status, result.attempts)
        elif number == 3 and result is not None and result.status == "error":
            assert rec["status"] == "skipped"
            assert rec["skip_reason"] == "previous_turn_failed"
            assert attempts == [] and rec["reply"] == "" and rec["error"] is None
            continue
        else:
            assert rec["status"] == "ok" and len(attempts) == 1, rec["error"]
        for attempt in attempts:
            n += 1
            # The attempts the fault hit: the failed ones, or the one a harmless fault changed.
            hit = number == 2 and result is not None
            hit = hit and (attempt["outcome"] == "error" or row.error is None)
            possible = texts(n, cid, number, rec["user"], after_fault, row.insert if hit else "")
            after_fault = hit
            if attempt["outcome"] == "ok":
                assert attempt["error"] is None and attempt["http_status"] == 200
                assert rec["reply"] in possible, "the reply must be the successful attempt's"
                assert attempt["partial_reply"] == ""
                continue
            assert hit, "only the faulted turn may fail"
            assert attempt["http_status"] == row.http
            assert attempt["error"]["type"] == row.error
            assert row.says in attempt["error"]["message"]
            kept = attempt["partial_reply"]
            if row.kept is None:
                assert kept in possible
            else:
                assert kept == "".join(_CHUNK.findall(next(iter(possible)))[: row.kept])
        if rec["status"] == "error":
            assert rec["reply"] == "" and rec["finish_reason"] is None
            assert rec["error"] == attempts[-1]["error"]
            assert rec["error"]["retryable"] is (row.persistent.attempts > 1)
        else:
            assert rec["error"] is None and rec["finish_reason"] == "stop"
            assert rec["server"]["conversation"] == {"id": f"local-{cid[:8]}", "turns_seen": n}
        # Waits: recorded on the attempt they follow, none after the last.
        waits = [a["wait_s"] for a in attempts]
        assert waits[-1] is None
        wanted_waits = expected_waits(row, len(attempts))
        for after, actual, wanted in zip(attempts[:-1], waits[:-1], wanted_waits, strict=True):
            assert actual is not None
            if real_waits and row.retry_after is None:  # a real jitter draw from [0, 2**(n-1))
                assert 0.0 <= actual <= 2.0 ** (after["n"] - 1)
            else:
                assert wait_matches(actual, wanted), (actual, wanted)


def check_server_log(
    requests: list[RecordedRequest], records: list[dict[str, Any]], harmless: bool
) -> None:
    """What the endpoint saw of one conversation: one request per attempt, in order,
    the fault on exactly the failed attempts, and a history made of replies only."""
    cid = records[0]["conversation_id"]
    seen = [r for r in requests if r.conversation_id == cid]
    sent = [(rec, a) for rec in records for a in rec["attempts"]]
    assert [(r.turn, r.attempt) for r in seen] == [(rec["turn"], a["n"]) for rec, a in sent]
    for req, (rec, attempt) in zip(seen, sent, strict=True):
        hit = attempt["outcome"] == "error" or (harmless and rec["turn"] == 2)
        assert (req.fault is not None) == hit, req
        history: list[dict[str, str]] = []
        for earlier in records[: rec["turn"] - 1]:
            history.append({"role": "user", "content": earlier["user"]})
            history.append({"role": "assistant", "content": earlier["reply"]})
        history.append({"role": "user", "content": rec["user"]})
        assert req.body["messages"] == history


def check_counts(summary: Any, run_dir: Path, result: Outcome) -> None:
    ok = 6 if result.status == "ok" else 4
    skipped = 0 if result.status == "ok" else 1
    error = 6 - ok - skipped
    assert (summary.ok, summary.error, summary.skipped) == (ok, error, skipped)
    assert summary.exit_status == result.exit
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "complete" and run["exit_status"] == result.exit
    assert run["counts"] == {"ok": ok, "error": error, "skipped": skipped}


CASES = [pytest.param(row, mode, id=f"{row.id}-{mode}") for row in MATRIX for mode in MODES]


@pytest.mark.parametrize(("row", "mode"), CASES)
def test_fault_matrix(tmp_path: Path, row: Fault, mode: str) -> None:
    result = outcome(row, mode)
    waits: list[float] = []
    scenarios = [scenario("faulted", FAULTED), scenario("other", OTHER)]
    with LocalServer(faults=FaultPlan.parse(plan(row, mode))) as server:
        settings = RunSettings(
            endpoint=server.url,
            out_dir=tmp_path,
            concurrency=1,  # one worker, one client: "other" reuses what "faulted" left
            retry=RetryPolicy(max_attempts=MAX_ATTEMPTS),
            timeouts=row.timeouts,
        )
        summary = Run(scenarios, settings, sleep=waits.append, rand=lambda: RAND).execute()
        requests = server.requests
    records = read(summary.run_dir)
    faulted = [r for r in records if r["scenario"] == "faulted"]
    other = [r for r in records if r["scenario"] == "other"]
    assert len(records) == 6 and len(faulted) == len(other) == 3
    assert faulted[0]["conversation_id"] != other[0]["conversation_id"]

    check_scenario(faulted, row, result)
    check_scenario(other, row, None)
    check_server_log(requests, faulted, harmless=row.error is None)
    check_server_log(requests, other, harmless=False)
    assert len(requests) == sum(len(r["attempts"]) for r in records)

    assert len(waits) == result.attempts - 1
    for actual, wanted in zip(waits, expected_waits(row, result.attempts), strict=True):
        assert wait_matches(actual, wanted), (waits, wanted)
    assert [a["wait_s"] for a in faulted[1]["attempts"][:-1]] == [round(w, 3) for w in waits]
    check_counts(summary, summary.run_dir, result)


def test_retry_after_is_waited_in_real_time(tmp_path: Path) -> None:
    """A 429 with ``Retry-After: 1`` and the real sleep: the retry starts a second later."""
    faults = FaultPlan.parse("turn=1,attempt=1:status=429,retry_after=1")
    with LocalServer(faults=faults) as server:
        settings = RunSettings(server.url, out_dir=tmp_path, retry=RetryPolicy(max_attempts=2))
        t0 = time.perf_counter()
        summary = Run([scenario("s", ("hello",))], settings).execute()
        elapsed = time.perf_counter() - t0
        assert [(r.turn, r.attempt) for r in server.requests] == [(1, 1), (1, 2)]
    (rec,) = read(summary.run_dir)
    first, second = rec["attempts"]
    assert rec["status"] == "ok" and first["http_status"] == 429 and first["wait_s"] == 1.0
    first_end = _time(first["started_at"]) + first["duration_ms"] / 1000
    gap = _time(second["started_at"]) - first_end
    # started_at has millisecond resolution; the wait is Retry-After, not backoff jitter.
    assert 0.95 <= gap <= 1.5, gap
    assert elapsed >= 1.0


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- through the command line -------------------------------------------------------------

SUITE = f"""\
scenarios:
  - name: faulted
    turns: [{", ".join(FAULTED)}]
  - name: other
    turns: [{", ".join(OTHER)}]
"""
BY_ID = {row.id: row for row in MATRIX}


@pytest.mark.parametrize(
    ("row_id", "mode"),
    [
        pytest.param("drop", "transient", id="drop-transient"),  # a real backoff wait, < 1 s
        pytest.param("503-retry-after-0", "persistent", id="503-retry-after-0-persistent"),
        pytest.param("422", "persistent", id="422-persistent"),
    ],
)
def test_fault_matrix_through_the_cli(tmp_path: Path, row_id: str, mode: str) -> None:
    row = BY_ID[row_id]
    result = outcome(row, mode)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    args = [
        *("run", str(suite), "--local", "--local-faults", plan(row, mode)),
        *("--max-attempts", str(MAX_ATTEMPTS), "--concurrency", "1"),
        *("--json", "--progress", "off", "--out", str(tmp_path / "out")),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == result.exit, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["exit_status"] == result.exit
    records = read(Path(summary["run_dir"]))
    check_scenario([r for r in records if r["scenario"] == "faulted"], row, result,
                   real_waits=True)  # fmt: skip
    check_scenario([r for r in records if r["scenario"] == "other"], row, None)
    assert ("faulted turn 2" in proc.stderr) is (result.status == "error")


# -- the docs -----------------------------------------------------------------------------


def render_table() -> str:
    """The markdown table of ``docs/fault-matrix.md``."""
    lines = [
        "| fault | spec | transient: status, attempts "
        "| persistent: status, attempts, exit | error type |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in MATRIX:
        error = f"`{row.error}`" if row.error else "none"
        lines.append(
            f"| {row.fault} | `{row.spec}` | {row.transient.cell(exit_code=False)} "
            f"| {row.persistent.cell(exit_code=True)} | {error} |"
        )
    return "\n".join(lines) + "\n"


def table_lines(markdown: str) -> str:
    return "".join(line + "\n" for line in markdown.splitlines() if line.startswith("| "))


def test_the_docs_show_this_matrix() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert table_lines(doc) == render_table(), (
        "docs/fault-matrix.md and MATRIX differ; paste `python -m tests.test_fault_matrix`"
    )
    assert f"--max-attempts {MAX_ATTEMPTS}" in doc
    # The README's copy of the section, once it has one, follows the same table.
    readme = README.read_text(encoding="utf-8")
    if SECTION in readme:
        section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
        assert table_lines(section) == render_table(), "README.md's fault matrix is out of date"


def test_every_fault_kind_is_in_the_matrix() -> None:
    kinds = {rule.kind for row in MATRIX for rule in FaultPlan.parse(row.spec).rules}
    assert kinds == {
        "status", "reset", "drop", "inband", "malformed", "bad_utf8", "huge_line",
        "html", "empty", "no_done", "stall",
    }  # fmt: skip


if __name__ == "__main__":
    print(render_table(), end="")
