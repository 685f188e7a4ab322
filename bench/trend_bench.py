"""Time ``build_trend`` over a generated outputs tree (default 1,000 runs x 100 turns).

    python bench/trend_bench.py [--runs 1000] [--turns 100] [--repeat 3]

The tree is written to a temporary folder and removed afterwards. Records look like
the runner's: a reply of a few hundred characters, one attempt, usage, a check or
two on some turns, three models over thirty days.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runner.records import RUN_SCHEMA, TURN_SCHEMA
from runner.trend import build_trend

MODELS = (("gpt-4o-mini", "PollinationsAI"), ("deepseek-r1", None), ("llama-3.3-70b", "Groq"))
T0 = datetime(2026, 10, 28, tzinfo=timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(root: Path, runs: int, turns: int, seed: int = 1) -> int:
    """Write ``runs`` run folders of ``turns`` turns each; returns the bytes written."""
    rng = random.Random(seed)
    reply = ("The capital of France is Paris, a city of about two million people. " * 5).strip()
    written = 0
    for r in range(runs):
        start = T0 + timedelta(minutes=43 * r)
        run_id = start.strftime("%Y%m%dT%H%M%SZ") + f"-{r:06x}"
        model, provider = MODELS[r % len(MODELS)]
        run_dir = root / run_id
        run_dir.mkdir()
        lines = []
        for i in range(turns):
            moment = start + timedelta(seconds=2 * i)
            status = "error" if rng.random() < 0.03 else "ok"
            ttft = rng.lognormvariate(5.5, 0.4)
            rec = {
                "schema": TURN_SCHEMA,
                "run_id": run_id,
                "scenario": f"scenario-{i // 10}",
                "scenario_file": f"scenarios/s{i // 10}.yaml",
                "conversation_id": f"c{i // 10}",
                "turn": i % 10,
                "user": "What is the capital of France? Answer in one sentence.",
                "reply": reply if status == "ok" else "",
                "status": status,
                "error": None
                if status == "ok"
                else {
                    "type": "http_status",
                    "message": "HTTP 502",
                    "http_status": 502,
                    "in_band": False,
                    "retryable": True,
                },
                "attempts": [
                    {
                        "n": 1,
                        "started_at": _stamp(moment),
                        "duration_ms": ttft * 3,
                        "outcome": status,
                        "http_status": 200 if status == "ok" else 502,
                        "error": None,
                        "wait_s": None,
                        "partial_reply": "",
                    }
                ],
                "finish_reason": "stop" if status == "ok" else None,
                "usage": {"prompt_tokens": 40, "completion_tokens": 80, "total_tokens": 120},
                "reasoning": None,
                "server": {
                    "id": "chatcmpl-x",
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
                    "messages_sent": 1 + 2 * (i % 10),
                },
                "timing": {
                    "started_at": _stamp(moment),
                    "ttft_ms": round(ttft, 1),
                    "duration_ms": round(ttft * 3, 1),
                    "chunks": 40,
                    "max_gap_ms": 35.0,
                },
            }
            if i % 3 == 0:
                rec["checks"] = [
                    {"name": "contains", "passed": rng.random() > 0.05, "detail": "found 'Paris'"}
                ]
            lines.append(json.dumps(rec))
        data = "\n".join(lines) + "\n"
        (run_dir / "transcript.jsonl").write_text(data, encoding="utf-8")
        written += len(data)
        run = {"schema": RUN_SCHEMA, "run_id": run_id, "started_at": _stamp(start)}
        (run_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trend-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        size = generate(root, args.runs, args.turns)
        print(
            f"generated {args.runs} runs x {args.turns} turns "
            f"({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s"
        )
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            trend = build_trend(root)
            best = min(best, time.perf_counter() - t)
        print(
            f"build_trend: {trend.turns} turns, {len(trend.rows)} groups in {best:.2f} s "
            f"= {trend.turns / best:,.0f} turns/s (best of {max(1, args.repeat)})"
        )


if __name__ == "__main__":
    main()
