"""Wire records: what `transcript.jsonl` and `run.json` hold.

These are the names users' scripts rely on; add fields, never rename them.
``TURN_SCHEMA`` versions the turn record.
"""

from __future__ import annotations

from typing import Any, TypedDict

TURN_SCHEMA = "convo-runner/turn@1"
RUN_SCHEMA = "convo-runner/run@1"


class ErrorRecord(TypedDict):
    type: str
    message: str
    http_status: int | None
    in_band: bool
    retryable: bool


class AttemptRecord(TypedDict):
    n: int
    started_at: str
    duration_ms: float
    outcome: str  # "ok" | "error"
    http_status: int | None
    error: ErrorRecord | None
    wait_s: float | None  # the wait taken after this attempt before the next one
    partial_reply: str  # text a failed attempt received; "" for the ok one (see "reply")


class ServerInfo(TypedDict):
    id: str | None
    model: str | None
    provider: str | None
    request_id: str | None
    conversation: Any


class RequestInfo(TypedDict):
    endpoint: str
    model: str
    provider: str | None
    history: str
    messages_sent: int


class Timing(TypedDict):
    started_at: str
    ttft_ms: float | None
    duration_ms: float | None
    chunks: int
    max_gap_ms: float | None


class CheckRecord(TypedDict):
    name: str
    passed: bool
    detail: str


class _TurnRecordBase(TypedDict):
    schema: str
    run_id: str
    scenario: str
    scenario_file: str
    conversation_id: str
    turn: int
    user: str
    reply: str
    status: str  # "ok" | "error" | "skipped"
    error: ErrorRecord | None
    attempts: list[AttemptRecord]
    finish_reason: str | None
    usage: dict[str, Any] | None
    reasoning: str | None
    server: ServerInfo
    request: RequestInfo
    timing: Timing


class TurnRecord(_TurnRecordBase, total=False):
    """One line of ``transcript.jsonl``: one scripted turn.

    Optional keys appear only when they apply: ``skip_reason`` on skipped turns,
    ``tool_calls`` when the reply carried them, ``checks`` when the turn has
    expectations, ``repeat`` with ``--repeat``, ``superseded`` on lines a resume
    replaced.
    """

    skip_reason: str
    tool_calls: list[dict[str, Any]]
    choices: int
    checks: list[CheckRecord]
    repeat: int
    superseded: bool
    shard: str  # in a merged run: the source run's "K/N"
    shard_run_id: str  # in a merged run: the source run's id


class FileRecord(TypedDict):
    path: str
    sha256: str


class Counts(TypedDict):
    ok: int
    error: int
    skipped: int


class RunRecord(TypedDict, total=False):
    """``run.json``: the run as a whole."""

    schema: str
    run_id: str
    status: str  # "running" | "complete" | "interrupted" | "max_runtime"
    pid: int
    started_at: str
    ended_at: str | None
    runner_version: str
    endpoint: str
    settings: dict[str, Any]
    files: list[FileRecord]
    scenarios: list[str]
    counts: Counts
    exit_status: int | None
    resumed: list[dict[str, Any]]
    checks: dict[str, int]  # {"run": n, "failed": m}
    merged_at: str  # merged runs only
    shards: list[dict[str, Any]]
    missing_shards: list[str]
    torn_lines_dropped: int
    shard: str
