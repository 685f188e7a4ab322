"""One measurement in a fresh process: ``python bench/worker.py '<json spec>'`` prints JSON.

Modes, chosen by the spec:

* ``{"baseline": "b0"|"b1", ...}``: the baseline and the runner alternate in
  this process, in A B B A order (A the baseline), so that both meet the same
  machine second by second; each side's two batches are returned;
* ``{"probe": true, "impl": ...}``: delivery lag of every event and TTFT error
  against the server's send stamps;
* otherwise: one measured ``Run`` of the runner (after an optional warm-up).

Every batch reports ``turns``, ``wall`` seconds, ``cpu`` seconds (user+system
of the whole process) and context ``switches`` over the work only; imports and
start-up are excluded. ``maxrss_kib`` is the process's peak resident set. Every
batch checks its own transcript (one line per turn, every reply complete)
before reporting, so a broken client cannot look fast.

The runner is driven through its library (``runner.engine.Run`` with scenarios
built in memory), or through ``ChatClient`` (the code path the engine uses)
when probing.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines import run_baseline, turn
from server import Settings

from runner.engine import Run, RunSettings
from runner.scenario import Scenario, Turn
from runner.transcript import iter_records

_USERS = ("Hello, i am Heiner. How are you?", "Tell me somethings about my name")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _switches() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw + r.ru_nivcsw


def _settings(url: str) -> Settings:
    from urllib.parse import parse_qsl, urlsplit

    return Settings.from_pairs(dict(parse_qsl(urlsplit(url).query)))


def _expected_reply(s: Settings) -> int:
    return s.tokens * s.bytes


def _users(turns: int) -> list[str]:
    return [_USERS[i % 2] for i in range(turns)]


def _scenarios(n: int, turns: int, distinct: bool) -> list[Scenario]:
    def make(i: int) -> Scenario:
        return Scenario(
            name=f"c{i}",
            file="bench.yaml",
            line=1,
            turns=tuple(Turn(u, 1) for u in _users(turns)),
            sha256="0" * 64,
            model="",
            history="server",
        )

    if distinct:
        return [make(i) for i in range(n)]
    one = make(0)
    return [one] * n


def _measure(work: Any) -> dict[str, Any]:
    cpu0, sw0, t0 = _cpu(), _switches(), time.perf_counter()
    turns = work()
    wall, cpu, switches = time.perf_counter() - t0, _cpu() - cpu0, _switches() - sw0
    return {"turns": turns, "wall": wall, "cpu": cpu, "switches": switches}


def _runner_batch(spec: dict[str, Any], tmp: Path, n: int) -> dict[str, Any]:
    """One Run of ``n`` conversations, measured, then its transcript checked."""
    turns, c = spec["turns"], spec["concurrency"]
    settings = RunSettings(endpoint=spec["url"], out_dir=tmp, concurrency=c)
    scenarios = _scenarios(n, turns, spec.get("distinct", True))
    done: list[Any] = []

    def work() -> int:
        done.append(Run(scenarios, settings).execute())
        return int(n * turns)

    result = _measure(work)
    want = _expected_reply(_settings(spec["url"]))
    lines = 0
    for rec in iter_records(done[0].run_dir / "transcript.jsonl"):
        lines += 1
        if rec["status"] != "ok" or len(rec["reply"]) != want:
            raise SystemExit(f"bad record: {json.dumps(rec)[:300]}")
    if lines != n * turns:
        raise SystemExit(f"runner wrote {lines} lines for {n * turns} turns")
    return result


def _baseline_batch(spec: dict[str, Any], tmp: Path, kind: str, n: int) -> dict[str, Any]:
    """``n`` conversations with B0 or B1, measured, then its transcript checked."""
    turns, c = spec["turns"], spec["concurrency"]
    path = tmp / f"{kind}-{time.perf_counter_ns()}.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        result = _measure(lambda: run_baseline(kind, spec["url"], [_users(turns)] * n, f, c))
    want = _expected_reply(_settings(spec["url"]))
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    if result["turns"] != n * turns or any(len(r["reply"]) != want for r in records):
        raise SystemExit(f"{kind} did not complete its turns")
    return result


def _paired(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Baseline and runner batches alternating in one process, in A B B A order, so
    that both meet the same machine; returns each side's batches."""
    n, kind = spec["conversations"], spec["baseline"]
    warm = max(1, spec["concurrency"])
    _baseline_batch(spec, tmp, kind, warm)
    _runner_batch(spec, tmp, warm)
    sides: dict[str, list[dict[str, Any]]] = {"runner": [], kind: []}
    for order in ((kind, "runner"), ("runner", kind)):
        for side in order:
            if side == "runner":
                sides[side].append(_runner_batch(spec, tmp, n))
            else:
                sides[side].append(_baseline_batch(spec, tmp, kind, n))
    return dict(sides)


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Delivery lag of every event (arrival - server stamp) and TTFT truth, in ms."""
    import uuid

    import requests

    url, count = spec["url"], spec["turns"]
    lags: list[float] = []
    ttft_err: list[float] = []
    if spec["impl"] == "runner":
        import runner.client as client_module
        from runner.accumulate import Accumulator
        from runner.sse import ServerSentEvent

        arrivals: list[tuple[float, str]] = []

        class Probe(Accumulator):
            """Notes when each event reaches the accumulator (events of one read together)."""

            def add_events(self, events: Sequence[ServerSentEvent]) -> bool:
                now = time.perf_counter()
                arrivals.extend((now, event.data) for event in events)
                return super().add_events(events)

        client_module.Accumulator = Probe  # type: ignore[attr-defined]
        client = client_module.ChatClient(url)
        for i in range(count + 1):
            arrivals.clear()
            body = {
                "model": "",
                "stream": True,
                "messages": [{"role": "user", "content": _USERS[0]}],
                "conversation_id": str(uuid.uuid4()),
            }
            t0 = time.perf_counter()
            ex = client.send(body)
            if i == 0:
                continue  # warm-up: connection set-up is not what is measured
            stamps = [(a, json.loads(d)["t"]) for a, d in arrivals if d != "[DONE]"]
            lags.extend((a - t) * 1000 for a, t in stamps)
            assert ex.ttft_ms is not None
            ttft_err.append(ex.ttft_ms - (stamps[0][1] - t0) * 1000)
        client.close()
    else:
        session = requests.Session() if spec["impl"] == "b1" else None
        post = session.post if session is not None else requests.post
        for i in range(count + 1):
            seen: list[tuple[float, float]] = []

            def on_line(arrival: float, obj: dict[str, Any], seen: Any = seen) -> None:
                seen.append((arrival, obj["t"]))

            t0 = time.perf_counter()
            turn(post, url, _USERS[0], str(uuid.uuid4()), on_line)
            if i == 0:
                continue
            lags.extend((a - t) * 1000 for a, t in seen)
            first_arrival, first_stamp = seen[0]
            ttft_err.append((first_arrival - t0) * 1000 - (first_stamp - t0) * 1000)
    return {
        "first_lag_max": max(ttft_err),
        "ttft_err_max": max(abs(x) for x in ttft_err),
        "lag_max": max(lags),
        "lag_median": sorted(lags)[len(lags) // 2],
        "lag_p99": sorted(lags)[int(len(lags) * 0.99)],
        "events": len(lags),
    }


def main() -> int:
    spec = json.loads(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if spec.get("probe"):
            result = _probe(spec)
        elif spec.get("baseline"):
            result = _paired(spec, Path(tmp))
        else:
            if spec.get("warmup"):
                _runner_batch(spec, Path(tmp), spec["warmup"])
            result = _runner_batch(spec, Path(tmp), spec["conversations"])
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
