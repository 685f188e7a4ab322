"""Running scenarios: conversations, turns in order, retries, records.

:class:`Run` is the library's entry point; the CLI is one client of it.

* Each scenario gets a fresh uuid4 ``conversation_id`` and runs its turns
  strictly in order on one worker thread; ``concurrency`` scenarios run at
  once, each worker keeping one :class:`~runner.client.ChatClient` (one
  keep-alive session).
* ``history: client`` sends the whole dialogue so far; ``history: server``
  sends only the new user turn (and the system prompt on turn 1), as
  gpt4free's own example does. A ``conversation`` handle from a reply goes back
  in the next turn's body in both modes.
* A turn is retried as a whole under the :class:`~runner.retry.RetryPolicy`;
  when it fails for good, the scenario's later turns are recorded ``skipped``.
* Every scripted turn gets exactly one line in ``transcript.jsonl``.
* :meth:`Run.stop` (signals, limits) stops new turns, cuts in-flight requests
  short and records them ``skipped`` with the reason.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner._version import __version__
from runner.checks import TemplateError, apply_captures, evaluate, render_user
from runner.client import ChatClient, Exchange, Timeouts
from runner.errors import Interrupted, TurnError
from runner.exitcodes import ExitStatus
from runner.ratelimit import TokenBucket
from runner.records import (
    RUN_SCHEMA,
    TURN_SCHEMA,
    AttemptRecord,
    RunRecord,
    TurnRecord,
)
from runner.resume import ResumePlan
from runner.retry import RetryPolicy
from runner.scenario import Scenario, Turn
from runner.transcript import (
    RUN_JSON,
    TRANSCRIPT,
    TranscriptWriter,
    create_run_dir,
    utc_now,
    write_json_atomic,
)

__all__ = ["Run", "RunSettings", "RunSummary", "Unit", "build_body"]

# One conversation to run: a scenario and its repeat number (None without --repeat).
Unit = tuple[Scenario, "int | None"]

REDACTED = "[REDACTED]"

# Keys the runner owns in a request body; a scenario's params may not set them.
RESERVED_KEYS = frozenset({"messages", "stream", "conversation_id"})


@dataclass(frozen=True)
class RunSettings:
    endpoint: str
    out_dir: Path = Path("outputs")
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    history: str | None = None  # overrides the scenarios' own
    provider: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None  # recorded by name only
    fsync_every_line: bool = False
    include_usage: bool = False
    paths: tuple[str, ...] = ()  # what the user asked to run, for --resume
    local: bool = False  # the endpoint is the built-in one, started for the run
    max_runtime: float | None = None  # seconds; then no new turn starts
    repeat: int = 1  # run each scenario this many times, each its own conversation
    rate: float | None = None  # requests per second across all workers
    strict_openai: bool = False  # send no gpt4free extras (conversation_id, conversation)
    shard: str | None = None  # "K/N" when this run is one shard of a suite

    def public(self) -> dict[str, Any]:
        """Settings as written to run.json: never the key itself."""
        t = self.timeouts
        return {
            "concurrency": self.concurrency,
            "max_attempts": self.retry.max_attempts,
            "history": self.history,
            "provider": self.provider,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "api_key_set": bool(self.api_key),
            "timeouts": {
                "connect": t.connect,
                "first_byte": t.first_byte,
                "idle": t.idle,
                "turn": t.turn,
            },
            "fsync_every_line": self.fsync_every_line,
            "include_usage": self.include_usage,
            "paths": list(self.paths),
            "local": self.local,
            "max_runtime": self.max_runtime,
            "repeat": self.repeat,
            "rate": self.rate,
            "strict_openai": self.strict_openai,
            "shard": self.shard,
        }


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    scenarios: int
    turns: int
    ok: int
    error: int
    skipped: int
    status: str  # "complete" | "interrupted"
    exit_status: int
    duration_s: float
    checks_run: int = 0
    checks_failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "transcript": str(self.run_dir / TRANSCRIPT),
            "scenarios": self.scenarios,
            "turns": self.turns,
            "ok": self.ok,
            "error": self.error,
            "skipped": self.skipped,
            "status": self.status,
            "checks_run": self.checks_run,
            "checks_failed": self.checks_failed,
            "exit_status": self.exit_status,
            "duration_s": round(self.duration_s, 3),
        }

    def line(self) -> str:
        return (
            f"{self.scenarios} scenario(s), {self.turns} turn(s): {self.ok} ok, "
            f"{self.error} error, {self.skipped} skipped"
            + (
                f"; {self.checks_failed} of {self.checks_run} check(s) failed"
                if self.checks_run
                else ""
            )
            + f" in {self.duration_s:.1f}s "
            f"[{self.status}] -> {self.run_dir}"
        )


def build_body(
    *,
    model: str,
    provider: str | None,
    messages: list[dict[str, str]],
    conversation_id: str,
    params: dict[str, Any] | None = None,
    stream_options: dict[str, Any] | None = None,
    conversation: Any = None,
    strict_openai: bool = False,
) -> dict[str, Any]:
    """The request body, keys in the canonical order of gpt4free's example.

    ``strict_openai`` leaves out gpt4free's extras, which OpenAI's own API
    refuses ("Unrecognized request argument supplied: conversation_id").
    """
    body: dict[str, Any] = {"model": model}
    if provider is not None:
        body["provider"] = provider
    body["stream"] = True
    body["messages"] = messages
    if not strict_openai:
        body["conversation_id"] = conversation_id
    for key, value in (params or {}).items():
        if key not in RESERVED_KEYS:
            body[key] = value
    if stream_options:
        body["stream_options"] = stream_options
    if conversation is not None and not strict_openai:
        body["conversation"] = conversation
    return body


class Run:
    """One run of a list of scenarios into a new run directory."""

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        settings: RunSettings,
        *,
        sleep: Callable[[float], Any] | None = None,
        rand: Callable[[], float] = random.random,
        on_record: Callable[[TurnRecord], None] | None = None,
        units: Sequence[Unit] | None = None,
    ) -> None:
        self.scenarios = list(scenarios)
        # What runs: the given units, or each scenario once (with repeat N: N times,
        # repeat by repeat), made one at a time so memory does not grow with the suite.
        self._given = None if units is None else list(units)
        self.unit_count = (
            len(self._given)
            if self._given is not None
            else len(self.scenarios) * max(1, settings.repeat)
        )
        self.settings = settings
        self._stop = threading.Event()
        self._stop_reason = "interrupted"
        self._stop_status: int | None = None
        self._aborting = False
        self._sleep = sleep or self._interruptible_sleep
        self._rand = rand
        self._on_record = on_record
        self._local = threading.local()
        self._clients: list[ChatClient] = []
        self._lock = threading.Lock()
        self._counts = {"ok": 0, "error": 0, "skipped": 0}
        self._checks_run = 0
        self._checks_failed = 0
        self.run_id = ""
        self.run_dir = Path()
        self._writer: TranscriptWriter | None = None
        self._bucket = TokenBucket(settings.rate) if settings.rate else None

    # -- control -----------------------------------------------------------

    def stop(
        self, reason: str = "interrupted", exit_status: int | None = None, *, abort: bool = True
    ) -> None:
        """Stop starting turns; with ``abort``, cut in-flight requests short too.

        Thread- and signal-safe. The first call's reason and exit status win.
        """
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop_status = exit_status
            self._stop.set()
        if abort:
            self._aborting = True
            with self._lock:
                clients = list(self._clients)
            for client in clients:
                client.abort()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- the run -----------------------------------------------------------

    def execute(self, resume: ResumePlan | None = None) -> RunSummary:
        """Run the scenarios into a new run directory, or finish ``resume``'s run."""
        settings = self.settings
        started = time.perf_counter()
        record: RunRecord
        total_scenarios = len(self.scenarios)
        if resume is None:
            self.run_id, self.run_dir = create_run_dir(settings.out_dir)
            files: dict[str, str] = {}
            for sc in self.scenarios:
                files.setdefault(sc.file, sc.sha256)
            record = {
                "schema": RUN_SCHEMA,
                "run_id": self.run_id,
                "status": "running",
                "pid": os.getpid(),
                "started_at": utc_now(),
                "ended_at": None,
                "runner_version": __version__,
                "endpoint": settings.endpoint,
                "settings": settings.public(),
                "files": [{"path": p, "sha256": h} for p, h in files.items()],
                "scenarios": [sc.name for sc in self.scenarios],
                "counts": {"ok": 0, "error": 0, "skipped": 0},
                "exit_status": None,
            }
            if settings.shard:
                record["shard"] = settings.shard
        else:
            self.run_id, self.run_dir = resume.run_id, resume.run_dir
            self._counts = {k: resume.kept[k] for k in ("ok", "error", "skipped")}
            self._checks_run = resume.kept.get("checks_run", 0)
            self._checks_failed = resume.kept.get("checks_failed", 0)
            total_scenarios = len(resume.scenarios)
            record = resume.record  # type: ignore[assignment]
            record["status"] = "running"
            record["pid"] = os.getpid()
            record["endpoint"] = settings.endpoint
            record.setdefault("resumed", []).append(
                {"at": utc_now(), "scenarios": [sc.name for sc, _ in self._units()]}
            )
        write_json_atomic(self.run_dir / RUN_JSON, record)
        timer: threading.Timer | None = None
        if settings.max_runtime is not None:
            timer = threading.Timer(
                settings.max_runtime,
                self.stop,
                args=("max_runtime", int(ExitStatus.TURN_ERRORS)),
                kwargs={"abort": False},
            )
            timer.daemon = True
            timer.start()
        self._writer = TranscriptWriter(
            self.run_dir / TRANSCRIPT, fsync_every_line=settings.fsync_every_line
        )
        try:
            workers = max(1, min(settings.concurrency, self.unit_count or 1))
            # Each worker takes the next unit when it is free: memory stays
            # O(workers), not one future per conversation.
            units = self._units()
            take = threading.Lock()

            def work() -> None:
                while True:
                    with take:
                        unit = next(units, None)
                    if unit is None:
                        return
                    self._run_unit(*unit)

            with ThreadPoolExecutor(workers, thread_name_prefix="runner") as pool:
                futures = [pool.submit(work) for _ in range(workers)]
                for future in futures:
                    future.result()
        finally:
            if timer is not None:
                timer.cancel()
            self._writer.close()
            for client in self._clients:
                client.close()
        counts = dict(self._counts)
        interrupted = self._stop.is_set()
        if interrupted and self._stop_status is not None:
            exit_status = self._stop_status
        elif counts["error"]:
            exit_status = int(ExitStatus.TURN_ERRORS)
        elif interrupted:
            exit_status = int(ExitStatus.INTERRUPTED)
        elif self._checks_failed:
            exit_status = int(ExitStatus.CHECKS_FAILED)
        else:
            exit_status = int(ExitStatus.OK)
        status = "interrupted" if interrupted and self._stop_reason == "interrupted" else "complete"
        if interrupted and self._stop_reason != "interrupted":
            status = self._stop_reason  # e.g. "max_runtime": resumable, but not a crash
        record["status"] = status
        record["ended_at"] = utc_now()
        record["counts"] = {
            "ok": counts["ok"],
            "error": counts["error"],
            "skipped": counts["skipped"],
        }
        record["checks"] = {"run": self._checks_run, "failed": self._checks_failed}
        record["exit_status"] = exit_status
        write_json_atomic(self.run_dir / RUN_JSON, record)
        return RunSummary(
            run_id=self.run_id,
            run_dir=self.run_dir,
            scenarios=total_scenarios,
            turns=sum(counts.values()),
            ok=counts["ok"],
            error=counts["error"],
            skipped=counts["skipped"],
            status=status,
            exit_status=exit_status,
            duration_s=time.perf_counter() - started,
            checks_run=self._checks_run,
            checks_failed=self._checks_failed,
        )

    def _units(self) -> Iterator[Unit]:
        if self._given is not None:
            yield from self._given
        elif self.settings.repeat > 1:
            for r in range(1, self.settings.repeat + 1):
                for sc in self.scenarios:
                    yield sc, r
        else:
            for sc in self.scenarios:
                yield sc, None

    def _client(self) -> ChatClient:
        client: ChatClient | None = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            client = ChatClient(s.endpoint, api_key=s.api_key, timeouts=s.timeouts)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _emit(self, rec: TurnRecord) -> None:
        failed = sum(1 for c in rec.get("checks", ()) if not c["passed"])
        assert self._writer is not None
        key = self.settings.api_key
        if key:
            # A server may echo request headers back (in an error body, even in a
            # reply): the key never reaches a transcript, a log or the terminal.
            text = json.dumps(rec, ensure_ascii=False)
            if key in text:
                rec = json.loads(text.replace(key, REDACTED))
        self._writer.write(rec)
        with self._lock:
            self._counts[rec["status"]] += 1
            self._checks_failed += failed
            self._checks_run += len(rec.get("checks", ()))
        if self._on_record is not None:
            self._on_record(rec)

    def _run_unit(self, sc: Scenario, repeat: int | None) -> None:
        written = [0]
        try:
            self._run_scenario(sc, repeat, written)
        except Exception as exc:  # a bug must not cost the other scenarios their run
            done = written[0]
            for number, turn in enumerate(sc.turns[done:], done + 1):
                rec = self._base_record(sc, "", number, turn.user, "", None, "", repeat)
                rec["status"] = "error"
                rec["error"] = {
                    "type": "internal_error",
                    "message": f"{type(exc).__name__}: {exc}",
                    "http_status": None,
                    "in_band": False,
                    "retryable": False,
                }
                self._emit(rec)

    def _run_scenario(self, sc: Scenario, repeat: int | None, written: list[int]) -> None:
        """Run one conversation, counting the records written in ``written[0]``."""
        s = self.settings
        provider = s.provider if s.provider is not None else sc.provider
        model = s.model if s.model is not None else sc.model
        history = s.history or sc.history
        stream_options = dict(sc.stream_options) if sc.stream_options else None
        if s.include_usage:
            stream_options = {**(stream_options or {}), "include_usage": True}
        conversation_id = str(uuid.uuid4())
        dialogue: list[dict[str, str]] = []
        if sc.system is not None:
            dialogue.append({"role": "system", "content": sc.system})
        conversation: Any = None
        skip_reason: str | None = None
        captured: dict[str, str] = {}
        for number, turn in enumerate(sc.turns, 1):
            user = turn.user
            if sc.templated and skip_reason is None:
                try:
                    user = render_user(turn.user, captured)
                except TemplateError:
                    skip_reason = "capture_failed"
            base = self._base_record(
                sc, conversation_id, number, user, model, provider, history, repeat
            )
            if skip_reason is None and self._stop.is_set():
                skip_reason = self._stop_reason
            if skip_reason is not None:
                self._emit(self._skipped(base, skip_reason))
                written[0] += 1
                continue
            if history == "client":
                messages = [*dialogue, {"role": "user", "content": user}]
            else:
                messages = [{"role": "user", "content": user}]
                if number == 1 and sc.system is not None:
                    messages.insert(0, {"role": "system", "content": sc.system})
            body = build_body(
                model=model,
                provider=provider,
                messages=messages,
                conversation_id=conversation_id,
                params=dict(sc.params),
                stream_options=stream_options,
                conversation=conversation,
                strict_openai=s.strict_openai,
            )
            base["request"]["messages_sent"] = len(messages)
            rec = self._run_turn(base, body)
            if rec["status"] == "ok":
                self._check(rec, turn, sc, captured)
            self._emit(rec)
            written[0] += 1
            if rec["status"] == "ok":
                dialogue.append({"role": "user", "content": user})
                dialogue.append({"role": "assistant", "content": rec["reply"]})
                if rec["server"]["conversation"] is not None:
                    conversation = rec["server"]["conversation"]
            elif rec["status"] == "skipped":
                skip_reason = rec.get("skip_reason", self._stop_reason)
            else:
                skip_reason = "previous_turn_failed"

    @staticmethod
    def _check(rec: TurnRecord, turn: Turn, sc: Scenario, captured: dict[str, str]) -> None:
        """Evaluate the turn's expectations and captures into ``rec["checks"]``."""
        checks = (*turn.expect, *sc.expect_all_turns)
        if not checks and not turn.capture:
            return
        timing = rec["timing"]
        results = evaluate(
            checks,
            reply=rec["reply"],
            finish_reason=rec["finish_reason"],
            ttft_ms=timing["ttft_ms"],
            duration_ms=timing["duration_ms"],
        )
        if turn.capture:
            values, capture_results = apply_captures(turn.capture, rec["reply"])
            captured.update(values)
            results.extend(capture_results)
        rec["checks"] = results

    def _base_record(
        self,
        sc: Scenario,
        conversation_id: str,
        number: int,
        user: str,
        model: str,
        provider: str | None,
        history: str,
        repeat: int | None = None,
    ) -> TurnRecord:
        rec: TurnRecord = {
            "schema": TURN_SCHEMA,
            "run_id": self.run_id,
            "scenario": sc.name,
            "scenario_file": sc.file,
            "conversation_id": conversation_id,
            "turn": number,
            "user": user,
            "reply": "",
            "status": "skipped",
            "error": None,
            "attempts": [],
            "finish_reason": None,
            "usage": None,
            "reasoning": None,
            "server": {
                "id": None,
                "model": None,
                "provider": None,
                "request_id": None,
                "conversation": None,
            },
            "request": {
                "endpoint": self.settings.endpoint,
                "model": model,
                "provider": provider,
                "history": history,
                "messages_sent": 0,
            },
            "timing": {
                "started_at": utc_now(),
                "ttft_ms": None,
                "duration_ms": None,
                "chunks": 0,
                "max_gap_ms": None,
            },
        }
        if repeat is not None:
            rec["repeat"] = repeat
        return rec

    @staticmethod
    def _skipped(rec: TurnRecord, reason: str) -> TurnRecord:
        rec["status"] = "skipped"
        rec["skip_reason"] = reason
        return rec

    def _run_turn(self, rec: TurnRecord, body: dict[str, Any]) -> TurnRecord:
        client = self._client()
        attempts: list[AttemptRecord] = rec["attempts"]

        def attempt() -> Exchange:
            if self._stop.is_set():
                raise Interrupted(f"not started: the run is stopping ({self._stop_reason})")
            if self._bucket is not None:
                self._bucket.acquire(self._stop.wait)
                if self._stop.is_set():
                    raise Interrupted(f"not started: the run is stopping ({self._stop_reason})")
            n = len(attempts) + 1
            started_at = utc_now()
            t0 = time.perf_counter()
            try:
                exchange = client.send(body, attempt=n)
            except TurnError as exc:
                if self._aborting and not isinstance(exc, Interrupted):
                    stopped = Interrupted(f"cut short: the run is stopping ({self._stop_reason})")
                    stopped.partial = exc.partial
                    exc = stopped
                attempts.append(
                    {
                        "n": n,
                        "started_at": started_at,
                        "duration_ms": _ms(time.perf_counter() - t0),
                        "outcome": "error",
                        "http_status": exc.http_status,
                        "error": exc.to_record(),  # type: ignore[typeddict-item]
                        "wait_s": None,
                        "partial_reply": exc.partial,
                    }
                )
                raise exc from None
            attempts.append(
                {
                    "n": n,
                    "started_at": started_at,
                    "duration_ms": _ms(time.perf_counter() - t0),
                    "outcome": "ok",
                    "http_status": exchange.http_status,
                    "error": None,
                    "wait_s": None,
                    "partial_reply": "",  # the text is the record's "reply"
                }
            )
            return exchange

        def before_sleep(n: int, error: BaseException | None, wait: float) -> None:
            attempts[-1]["wait_s"] = round(wait, 3)

        retrying = self.settings.retry.retrying(
            sleep=self._sleep,
            should_stop=self._stop.is_set,
            rand=self._rand,
            before_sleep=before_sleep,
        )
        try:
            exchange: Exchange = retrying(attempt)
        except Interrupted:
            return self._skipped(rec, self._stop_reason)
        except TurnError as exc:
            # A retry the stop prevented is not the provider's failure: the turn is
            # recorded as stopped (and a resume runs it again), attempts kept.
            if self._stop.is_set() and (self._aborting or exc.retryable):
                return self._skipped(rec, self._stop_reason)
            rec["status"] = "error"
            rec["error"] = exc.to_record()  # type: ignore[typeddict-item]
            if attempts:
                rec["timing"]["duration_ms"] = attempts[-1]["duration_ms"]
            rec["server"]["request_id"] = exc.request_id
            return rec
        reply = exchange.reply
        rec["status"] = "ok"
        rec["reply"] = reply.text
        rec["finish_reason"] = reply.finish_reason
        rec["usage"] = reply.usage
        rec["reasoning"] = reply.reasoning
        rec["server"] = {
            "id": reply.id,
            "model": reply.model,
            "provider": reply.provider,
            "request_id": exchange.request_id,
            "conversation": reply.conversation,
        }
        rec["timing"]["ttft_ms"] = _ms_opt(exchange.ttft_ms)
        rec["timing"]["duration_ms"] = round(exchange.duration_ms, 3)
        rec["timing"]["chunks"] = exchange.chunks
        rec["timing"]["max_gap_ms"] = _ms_opt(exchange.max_gap_ms)
        if reply.tool_calls:
            rec["tool_calls"] = reply.tool_calls
        if reply.choices > 1:
            rec["choices"] = reply.choices
        return rec


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _ms_opt(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)
