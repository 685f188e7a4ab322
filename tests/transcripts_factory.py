"""Realistic synthetic transcripts for tests of the report, diff and trend.

``turn(...)`` builds one ``transcript.jsonl`` record with sensible defaults;
``write_run(...)`` writes a run folder. ``demo_run(...)`` writes a varied run (several
scenarios, repeats, errors, skipped turns, checks) used for the HTML screenshot::

    python -m tests.transcripts_factory OUT_DIR     # writes OUT_DIR/<run_id>/
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from runner.records import RUN_SCHEMA, TURN_SCHEMA

T0 = datetime(2026, 11, 26, 14, 5, 12, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_id_at(moment: datetime, suffix: str = "3f9a1c") -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def turn(
    *,
    scenario: str = "greeting",
    turn: int = 0,
    run_id: str = "20261126T140512Z-3f9a1c",
    user: str = "Hello!",
    reply: str = "Hi there, how can I help?",
    status: str = "ok",
    error: Mapping[str, Any] | None = None,
    started_at: datetime | str | None = None,
    ttft_ms: float | None = 120.0,
    duration_ms: float | None = 480.0,
    completion_tokens: int | None = 12,
    checks: Iterable[tuple[str, bool, str]] | None = None,
    repeat: int | None = None,
    superseded: bool = False,
    model: str = "gpt-4o-mini",
    provider: str | None = "PollinationsAI",
    finish_reason: str | None = "stop",
    **extra: Any,
) -> dict[str, Any]:
    """One transcript line; ``error`` may be a message string via ``error={"message": ..}``."""
    start = started_at if started_at is not None else T0 + timedelta(seconds=turn)
    started = start if isinstance(start, str) else iso(start)
    if status == "error" and error is None:
        error = {"type": "http_status", "message": "HTTP 502 from upstream", "http_status": 502}
    err: dict[str, Any] | None = None
    if error is not None:
        err = {
            "type": "turn_error",
            "message": "failed",
            "http_status": None,
            "in_band": False,
            "retryable": True,
            **error,
        }
    usage = None
    if completion_tokens is not None:
        usage = {
            "prompt_tokens": 20 + 10 * turn,
            "completion_tokens": completion_tokens,
            "total_tokens": 20 + 10 * turn + completion_tokens,
        }
    rec: dict[str, Any] = {
        "schema": TURN_SCHEMA,
        "run_id": run_id,
        "scenario": scenario,
        "scenario_file": f"scenarios/{scenario}.yaml",
        "conversation_id": f"{scenario}-{repeat or 0}",
        "turn": turn,
        "user": user,
        "reply": reply if status != "skipped" else "",
        "status": status,
        "error": err,
        "attempts": [
            {
                "n": 1,
                "started_at": started,
                "duration_ms": duration_ms or 0.0,
                "outcome": "error" if status == "error" else "ok",
                "http_status": 200 if status == "ok" else (err or {}).get("http_status"),
                "error": err,
                "wait_s": None,
                "partial_reply": reply,
            }
        ]
        if status != "skipped"
        else [],
        "finish_reason": finish_reason if status == "ok" else None,
        "usage": usage if status == "ok" else None,
        "reasoning": None,
        "server": {
            "id": "chatcmpl-1",
            "model": model,
            "provider": provider,
            "request_id": None,
            "conversation": None,
        },
        "request": {
            "endpoint": "http://localhost:1337/v1/chat/completions",
            "model": model,
            "provider": provider,
            "history": "client",
            "messages_sent": 1 + 2 * turn,
        },
        "timing": {
            "started_at": started,
            "ttft_ms": ttft_ms if status != "skipped" else None,
            "duration_ms": duration_ms if status != "skipped" else None,
            "chunks": 8,
            "max_gap_ms": 40.0,
        },
    }
    if status == "skipped":
        rec["skip_reason"] = "an earlier turn failed"
    if checks is not None:
        rec["checks"] = [{"name": n, "passed": p, "detail": d} for n, p, d in checks]
    if repeat is not None:
        rec["repeat"] = repeat
    if superseded:
        rec["superseded"] = True
    rec.update(extra)
    return rec


def write_run(
    run_dir: Path,
    records: Iterable[Mapping[str, Any]],
    *,
    run: Mapping[str, Any] | None = None,
    torn: str | None = None,
) -> Path:
    """Write ``transcript.jsonl`` (plus a torn last line if given) and ``run.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "transcript.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if torn is not None:
            fh.write(torn)
    info: dict[str, Any] = {
        "schema": RUN_SCHEMA,
        "run_id": run_dir.name,
        "status": "complete",
        "started_at": iso(T0),
        "ended_at": iso(T0 + timedelta(minutes=2)),
        "runner_version": "0.1.0",
        "endpoint": "http://localhost:1337/v1/chat/completions",
        "settings": {"model": "gpt-4o-mini", "provider": "PollinationsAI"},
        "files": [],
        "scenarios": [],
        "counts": {"ok": 0, "error": 0, "skipped": 0},
        "exit_status": 0,
    }
    if run is not None:
        info.update(run)
    (run_dir / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return run_dir


_SCENARIOS = {
    "capital-cities": [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("And its population?", "Paris has about 2.1 million inhabitants in the city proper."),
        ("Name a famous museum there.", "The Louvre is the most famous museum in Paris."),
    ],
    "json-extraction": [
        ("Extract the city as JSON: 'I live in Lyon'", '{"city": "Lyon"}'),
        ("Now add the country.", '{"city": "Lyon", "country": "France"}'),
    ],
    "long-story": [
        ("Write a short story about a lighthouse.", "Once upon a time " + "the light " * 60),
        ("Give it a title.", "The Keeper of the Northern Light"),
        ("Summarise it in one line.", "A keeper tends a lighthouse through a storm."),
        ("Translate the title to French.", "Le Gardien de la Lumière du Nord"),
    ],
    "html-injection": [
        ("Reply with a script tag.", "<script>alert('x')</script> & <b>bold</b>"),
    ],
}


def demo_run(out: Path, *, seed: int = 10, repeats: int = 3, when: datetime = T0) -> Path:
    """A varied run: four scenarios x ``repeats``, latencies, errors, skips and checks."""
    rng = random.Random(seed)
    run_id = run_id_at(when, f"{seed:06x}")
    records: list[dict[str, Any]] = []
    clock = when
    for rep in range(repeats):
        for scenario, turns in _SCENARIOS.items():
            failed = False
            for i, (user, reply) in enumerate(turns):
                base = 900.0 if scenario == "long-story" else 300.0
                ttft = rng.lognormvariate(0, 0.35) * base * (0.5 if i else 1.0)
                tokens = max(1, len(reply) // 4)
                duration = ttft + tokens * rng.uniform(12, 30)
                status = "ok"
                if failed:
                    status = "skipped"
                elif rng.random() < 0.07:
                    status = "error"
                checks: list[tuple[str, bool, str]] = []
                if status == "ok":
                    if scenario == "capital-cities" and i == 0:
                        checks.append(("contains", True, "found 'Paris' at offset 26"))
                    if scenario == "json-extraction":
                        ok_json = rng.random() > 0.2
                        checks.append(
                            (
                                "json",
                                ok_json,
                                "valid JSON (object)"
                                if ok_json
                                else "the reply is not JSON (Expecting value)",
                            )
                        )
                    checks.append(("max_ttft_ms", ttft <= 900, f"TTFT {ttft:.0f} ms vs 900 ms"))
                records.append(
                    turn(  # numbered from 1, as the runner does
                        scenario=scenario,
                        turn=i + 1,
                        run_id=run_id,
                        user=user,
                        reply=reply,
                        status=status,
                        started_at=clock,
                        ttft_ms=round(ttft, 1),
                        duration_ms=round(duration, 1),
                        completion_tokens=tokens,
                        checks=checks or None,
                        repeat=rep + 1,
                    )
                )
                failed = failed or status == "error"
                clock += timedelta(milliseconds=duration + rng.uniform(20, 120))
    return write_run(
        out / run_id,
        records,
        run={"run_id": run_id, "started_at": iso(when), "ended_at": iso(clock)},
    )


if __name__ == "__main__":
    print(demo_run(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
