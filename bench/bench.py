"""The benchmark driver behind ``bench/run``: floors as ratios, measured in the same minute.

Each round is a fresh process (``bench/worker.py``), so no round warms the
next; the server (``bench/server.py``) runs in its own process. Where
``taskset`` exists the server is pinned to the last CPU and every client to the
first, so they do not compete for a core. Within a round, baseline and runner
batches alternate (A B B A) and each side counts its better batch, so a burst
of load from elsewhere on the machine does not decide the ratio; the ratios of
the rounds are summarised as median, min and max.

Floors measured through the library (``runner.engine.Run``, scenarios built in
memory): 1, 2, 3, 5, 6; through ``ChatClient`` (the code path the engine uses):
4; through the ``runner`` command: 7, 8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
RUNNER = str(Path(PY).with_name("runner"))


@dataclass
class Row:
    floor: str
    case: str
    metric: str
    target: str
    values: list[float] = field(default_factory=list)
    ok: Callable[[float], bool] = lambda v: True
    fmt: str = "{:.2f}"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cells(self) -> list[str]:
        if not self.values:
            return [self.floor, self.case, self.metric, "-", "-", "-", self.target, "n/a"]
        f = self.fmt.format
        verdict = "yes" if self.ok(self.median) else "NO"
        return [
            self.floor,
            self.case,
            self.metric,
            f(self.median),
            f(min(self.values)),
            f(max(self.values)),
            self.target,
            verdict,
        ]


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rounds = 3 if quick else 5
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pin = shutil.which("taskset") is not None and len(cpus) >= 2
        self.client_cpu = str(cpus[0]) if cpus else "0"
        self.server_cpu = str(cpus[-1]) if cpus else "0"
        self.rows: list[Row] = []
        self.server: subprocess.Popen[str] | None = None
        self.base = ""

    # -- processes ---------------------------------------------------------

    def _pinned(self, cpu: str, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", cpu, *argv] if self.pin else list(argv)

    def start_server(self) -> None:
        argv = self._pinned(self.server_cpu, [PY, str(HERE / "server.py"), "--port", "0"])
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        port = self.server.stdout.readline().strip()
        if not port.isdigit():
            raise SystemExit("bench server did not start")
        self.base = f"http://127.0.0.1:{port}/v1/chat/completions"

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=10)

    def url(self, **settings: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        return f"{self.base}?{query}" if query else self.base

    def worker(self, spec: dict[str, Any]) -> dict[str, Any]:
        argv = self._pinned(self.client_cpu, [PY, str(HERE / "worker.py"), json.dumps(spec)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"worker failed: {spec}\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def command(self, argv: Sequence[str]) -> tuple[float, int]:
        """Wall seconds and peak RSS (KiB) of one ``runner`` command."""
        full = self._pinned(self.client_cpu, argv)
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err[-2000:]}")
        return wall, usage.ru_maxrss

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def say(self, text: str) -> None:
        sys.stderr.write(f"bench: {text}\n")
        sys.stderr.flush()

    # -- floors ------------------------------------------------------------

    def paired(
        self,
        floor: str,
        case: str,
        baseline: str,
        url: str,
        conversations: int,
        turns: int,
        concurrency: int,
        target: float,
    ) -> None:
        """turns/s of the runner over the baseline's, one ratio per round."""
        label = baseline.upper()
        row = self.add(
            Row(floor, case, f"turns/s runner/{label}", f">= {target}", ok=lambda v: v >= target)
        )
        rates: dict[str, list[float]] = {"runner": [], baseline: []}
        for _ in range(self.rounds):
            r = self.worker(
                {
                    "baseline": baseline,
                    "url": url,
                    "conversations": conversations,
                    "turns": turns,
                    "concurrency": concurrency,
                }
            )
            for side in rates:  # each side's better batch of the round
                rates[side].append(max(b["turns"] / b["wall"] for b in r[side]))
            row.values.append(rates["runner"][-1] / rates[baseline][-1])
        row.note = (
            f"runner {statistics.median(rates['runner']):.0f} turns/s, "
            f"{label} {statistics.median(rates[baseline]):.0f} turns/s"
        )
        self.say(f"{case}: {row.note}; ratios {_fmt(row.values)}")

    def floor1(self) -> None:
        self.paired("1", "sequential, 20 tokens", "b0", self.url(tokens=20), 60, 5, 1, 1.5)
        self.paired("1", "sequential, 500 tokens", "b0", self.url(tokens=500), 12, 5, 1, 1.15)

    def floor2(self) -> None:
        self.paired("2", "8 workers, 20 tokens", "b1", self.url(tokens=20), 96, 5, 8, 1.25)

    def floor3(self) -> None:
        url = self.url(tokens=20, first=0.1, gap=0.01)
        turn_s = 0.1 + 20 * 0.01
        rounds = 1 if self.quick else self.rounds
        ideal = 7 * 5 * turn_s  # 50 conversations on 8 workers: 7 waves of 5 turns
        c8 = self.add(
            Row("3", "50x5 turns, 0.3 s each, 8 workers", "wall / ideal (10.5 s)", "<= 1.05")
        )
        c8.ok = lambda v: v <= 1.05
        c8.fmt = "{:.3f}"
        c32 = self.add(
            Row("3", "128x5 turns, 0.3 s each, 32 workers", "turns/s / (32 x 1 worker)", ">= 0.9")
        )
        c32.ok = lambda v: v >= 0.9
        c32.fmt = "{:.3f}"
        for _ in range(rounds):
            r = self.worker(
                {"impl": "runner", "url": url, "conversations": 50, "turns": 5, "concurrency": 8}
            )
            c8.values.append(r["wall"] / ideal)
            one = self.worker(
                {"impl": "runner", "url": url, "conversations": 2, "turns": 5, "concurrency": 1}
            )
            single = one["turns"] / one["wall"]
            many = self.worker(
                {"impl": "runner", "url": url, "conversations": 128, "turns": 5, "concurrency": 32}
            )
            c32.values.append(many["turns"] / many["wall"] / (32 * single))
        c8.note = f"ideal {ideal:.1f} s"
        self.say(f"latency-bound: c8 {c8.values}, c32 {c32.values}")

    def floor4(self) -> None:
        """Per round, the worst TTFT error and the worst event lag of 8 turns (168 events)."""
        for framing in ("chunked", "close", "length"):
            url = self.url(tokens=20, first=0.05, gap=0.01, stamp=1, framing=framing)
            ttft = self.add(Row("4", f"{framing}: TTFT error", "max |ms| of a round", "<= 1 ms"))
            lag = self.add(
                Row("4", f"{framing}: event delivery lag", "max ms of a round", "<= 1 ms")
            )
            ttft.ok = lag.ok = _at_most(1.0)
            medians, p99s = [], []
            for _ in range(self.rounds):
                r = self.worker({"impl": "runner", "url": url, "turns": 8, "probe": True})
                ttft.values.append(r["ttft_err_max"])
                lag.values.append(r["lag_max"])
                medians.append(r["lag_median"])
                p99s.append(r["lag_p99"])
            b = self.worker({"impl": "b0", "url": url, "turns": 8, "probe": True})
            ttft.note = f"B0 {b['ttft_err_max']:.2f} ms"
            median, p99 = statistics.median(medians), statistics.median(p99s)
            lag.note = (
                f"median {median:.2f} ms, p99 {p99:.2f} ms; "
                f"B0 max {b['lag_max']:.2f} ms, median {b['lag_median']:.2f} ms"
            )
            self.say(f"{framing}: runner ttft {_fmt(ttft.values)}, lag {_fmt(lag.values)}; b0 {b}")

    def floor5(self) -> None:
        small, big = 1000, 10_000 if self.quick else 50_000
        row = self.add(Row("5", f"peak RSS, {small:,} -> {big:,} turns", "growth MiB", "<= 1 MiB"))
        row.ok = lambda v: v <= 1.0
        url = self.url(tokens=20)
        peaks = {}
        for turns in (small, big):
            spec = {
                "impl": "runner",
                "url": url,
                "conversations": turns // 5,
                "turns": 5,
                "concurrency": 4,
                "distinct": False,
            }
            peaks[turns] = self.worker(spec)["maxrss_kib"] / 1024
        row.values.append(peaks[big] - peaks[small])
        row.note = f"peak {peaks[small]:.1f} MiB -> {peaks[big]:.1f} MiB"
        self.say(f"memory: {row.note}")

    def floor6(self) -> None:
        tokens, size = 2000, 32
        mb = _body_size(tokens=tokens, bytes=size) / 1e6
        for framing, target in (("chunked", 0.9), ("close", 0.6), ("length", 0.6)):
            row = self.add(Row("6", f"CPU per MB of SSE, {framing}", "runner/B0", f"<= {target}"))
            row.ok = _at_most(target)
            url = self.url(tokens=tokens, bytes=size, framing=framing)
            per_mb: dict[str, list[float]] = {"runner": [], "b0": []}
            for _ in range(self.rounds):
                r = self.worker(
                    {
                        "baseline": "b0",
                        "url": url,
                        "conversations": 4,
                        "turns": 5,
                        "concurrency": 1,
                    }
                )
                for side in per_mb:  # each side's better batch of the round
                    per_mb[side].append(min(b["cpu"] / (b["turns"] * mb) for b in r[side]))
                row.values.append(per_mb["runner"][-1] / per_mb["b0"][-1])
            row.note = (
                f"runner {statistics.median(per_mb['runner']) * 1000:.1f} ms/MB, "
                f"B0 {statistics.median(per_mb['b0']) * 1000:.1f} ms/MB"
            )
            self.say(f"cpu/MB {framing}: {row.note}; ratios {_fmt(row.values)}")

    def floor7(self, tmp: Path) -> None:
        one = tmp / "one.yaml"
        one.write_text("name: one\nturns:\n  - Hello\n", encoding="utf-8")
        for case, argv in (
            ("runner --help", [RUNNER, "--help"]),
            ("runner validate (1 file)", [RUNNER, "validate", str(one)]),
        ):
            row = self.add(Row("7", case, "wall ms", "<= 150 ms", fmt="{:.0f}"))
            row.ok = lambda v: v <= 150
            for _ in range(self.rounds * 2):
                row.values.append(self.command(argv)[0] * 1000)

    def floor8(self, tmp: Path) -> None:
        sizes = (1000, 2000) if self.quick else (1000, 10_000)
        results: dict[int, dict[str, tuple[float, int]]] = {}
        for n in sizes:
            folder = tmp / f"suite{n}"
            folder.mkdir()
            for i in range(n):
                (folder / f"s{i:05d}.yaml").write_text(
                    f"name: s{i}\nmodel: ''\nturns:\n  - Hello number {i}\n", encoding="utf-8"
                )
            out = tmp / f"out{n}"
            results[n] = {
                "validate": self.command([RUNNER, "validate", str(folder)]),
                "run": self.command(
                    [
                        RUNNER,
                        "run",
                        str(folder),
                        "--endpoint",
                        self.url(tokens=20),
                        "--out",
                        str(out),
                        "--concurrency",
                        "8",
                        "--progress",
                        "off",
                    ]
                ),
            }
            lines = sum(1 for _ in next(out.iterdir()).joinpath("transcript.jsonl").open())
            if lines != n:
                raise SystemExit(f"run of {n} scenarios wrote {lines} lines")
        small, big = sizes
        for what in ("validate", "run"):
            (t0, m0), (t1, m1) = results[small][what], results[big][what]
            row = self.add(
                Row(
                    "8",
                    f"{what} {big:,} files",
                    "seconds",
                    "report",
                    values=[t1],
                    note=(
                        f"{small:,} files: {t0:.2f} s, {m0 / 1024:.0f} MiB; "
                        f"{big:,} files: {t1:.2f} s, {m1 / 1024:.0f} MiB "
                        f"(time x{t1 / t0:.1f}, memory +{(m1 - m0) / 1024:.0f} MiB "
                        f"for {big / small:.0f}x the files)"
                    ),
                )
            )
            self.say(f"{what}: {row.note}")

    # -- report ------------------------------------------------------------

    def table(self) -> str:
        head = ["floor", "case", "metric", "median", "min", "max", "target", "holds"]
        rows = [head] + [r.cells() for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = []
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        notes = [f"  [{r.floor}] {r.case}: {r.note}" for r in self.rows if r.note]
        return "\n".join([*lines, "", "notes:", *notes])


def _at_most(target: float) -> Callable[[float], bool]:
    return lambda v: v <= target


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _body_size(**settings: Any) -> int:
    sys.path.insert(0, str(HERE))
    from server import Settings, body_size

    return body_size(Settings(**settings))


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return (
        f"{model}, {os.cpu_count()} CPU(s), {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, requests {version('requests')}, "
        f"urllib3 {version('urllib3')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller loads")
    parser.add_argument("--only", help="comma-separated floors to run, e.g. 1,4")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {str(i) for i in range(1, 9)}
    bench = Bench(args.quick)
    started = time.perf_counter()
    bench.start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as name:
            tmp = Path(name)
            for number in sorted(wanted):
                bench.say(f"floor {number} ...")
                step = getattr(bench, f"floor{number}")
                if number in ("7", "8"):
                    step(tmp)
                else:
                    step()
    finally:
        bench.stop_server()
    elapsed = time.perf_counter() - started
    pinning = (
        f"server on CPU {bench.server_cpu}, clients on CPU {bench.client_cpu}"
        if bench.pin
        else "not pinned (taskset missing or one CPU)"
    )
    print(f"machine: {machine()}")
    print(f"rounds: {bench.rounds} ({'quick' if args.quick else 'full'}); {pinning}")
    print(f"took {elapsed:.0f} s\n")
    print(bench.table())
    if args.json:
        out = [
            {
                "floor": r.floor,
                "case": r.case,
                "metric": r.metric,
                "values": r.values,
                "target": r.target,
                "holds": r.cells()[-1],
                "note": r.note,
            }
            for r in bench.rows
        ]
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": out}, indent=2))
    failed = [r for r in bench.rows if r.cells()[-1] == "NO"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
