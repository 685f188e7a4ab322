"""The command line: parse, wire, call the library, map errors to exit statuses.

Heavy modules (requests, tenacity, tqdm) are imported inside the commands that
need them, so ``runner --help`` and ``runner validate`` start fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from runner._version import __version__
from runner.errors import LockHeldError, RunnerError, ScenarioError, UsageError
from runner.exitcodes import ExitStatus

DEFAULT_ENDPOINT = "http://localhost:1337/v1/chat/completions"


def _number(
    convert: Callable[[str], float], what: str, minimum: float, *, strict: bool
) -> Callable[[str], Any]:
    """An argparse type: a finite number >= minimum (> minimum when ``strict``)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if not ok or not math.isfinite(value):
            bound = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"expected {what} {bound} {minimum:g}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a whole number", 1, strict=False)
_seconds = _number(float, "seconds", 0, strict=True)
_non_negative = _number(float, "seconds", 0, strict=False)
_ratio = _number(float, "a number", 0, strict=True)
_fraction = _number(float, "a number", 0, strict=False)


class _Parser(argparse.ArgumentParser):
    """One-line errors with exit status 2, and ``--version`` on every command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"runner {__version__}")

    def error(self, message: str) -> Any:  # one line, exit 2, no traceback
        self.exit(int(ExitStatus.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runner",
        description="Replay scripted dialogues against OpenAI-compatible chat endpoints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run scenarios and write a transcript",
        description="Run every scenario in PATH (YAML files or folders) and write "
        "OUT/<run_id>/transcript.jsonl and run.json.",
    )
    run.add_argument("paths", nargs="*", metavar="PATH", help="scenario file or folder")
    run.add_argument(
        "--endpoint",
        help="chat-completions URL, or a base URL like http://host:port/v1 "
        f"(default: $RUNNER_ENDPOINT or {DEFAULT_ENDPOINT})",
    )
    run.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        metavar="N",
        help="scenarios run in parallel (default: 4)",
    )
    run.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=None,
        metavar="N",
        help="attempts per turn (default: 4)",
    )
    run.add_argument(
        "--history", choices=("client", "server"), help="override the scenarios' history mode"
    )
    run.add_argument("--provider", help="override the scenarios' provider")
    run.add_argument("--model", help="override the scenarios' model")
    run.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the API key (default: RUNNER_API_KEY)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress on stderr: a bar on a terminal, periodic lines elsewhere",
    )
    run.add_argument(
        "--progress-interval",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a terminal",
    )
    run.add_argument(
        "--local",
        action="store_true",
        help="start the built-in local endpoint for this run and use it",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument(
        "--connect-timeout", type=_seconds, metavar="S", help="seconds to connect (default: 10)"
    )
    run.add_argument(
        "--first-byte-timeout",
        type=_seconds,
        metavar="S",
        help="seconds to the first byte of the reply (default: 120)",
    )
    run.add_argument(
        "--idle-timeout",
        type=_seconds,
        metavar="S",
        help="seconds without a byte mid-stream (default: 120)",
    )
    run.add_argument(
        "--turn-timeout",
        type=_seconds,
        metavar="S",
        help="seconds for a whole turn attempt (default: 600)",
    )
    run.add_argument(
        "--include-usage", action="store_true", help='send stream_options: {"include_usage": true}'
    )
    run.add_argument(
        "--fsync-every-line",
        action="store_true",
        help="fsync the transcript after every line (default: every 0.2 s)",
    )
    run.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help="run each scenario N times, each with its own conversation_id",
    )
    run.add_argument(
        "--strict-openai",
        action="store_true",
        default=None,
        help="send only OpenAI's own body fields: no conversation_id or conversation "
        "(OpenAI's API refuses unknown fields)",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        help="run only shard K of N (a stable hash of file and scenario name); "
        "merge the N runs with `runner merge`",
    )
    run.add_argument(
        "--rate",
        type=_ratio,
        metavar="R",
        help="start at most R requests per second across all workers (retries included)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish an interrupted run: keep finished scenarios, rerun the others",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="with --resume: resume even if scenario files changed",
    )
    run.add_argument(
        "--lock",
        metavar="PATH",
        help="exit with status 4 at once if another run holds this lock file",
    )
    run.add_argument(
        "--max-runtime",
        type=_seconds,
        metavar="S",
        help="start no turn after S seconds; the rest are skipped (exit 3)",
    )
    _add_local_server_options(run, prefix="local-")

    validate = sub.add_parser(
        "validate",
        help="check scenario files; send nothing",
        description="Check scenario files and report the first problem of each, with file:line.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--json", action="store_true", help="print the result as JSON")

    report = sub.add_parser(
        "report",
        help="summarise a run: tables, slowest and failing turns, charts",
        description="Summarise a run directory: per-scenario tables, flakiness across "
        "repeats, the slowest and failing turns.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    _add_output_options(report, "report")

    diff = sub.add_parser(
        "diff",
        help="compare two runs; exit 1 on regressions",
        description="Line up two runs turn by turn and report what changed. "
        "Exit 1 when there is a regression, 0 otherwise.",
    )
    diff.add_argument("base", metavar="BASE_RUN")
    diff.add_argument("new", metavar="NEW_RUN")
    _add_output_options(diff, "diff")
    diff.add_argument(
        "--max-latency-ratio",
        type=_ratio,
        default=1.5,
        metavar="R",
        help="a p50 TTFT/duration more than R times the base is a regression (default: 1.5)",
    )
    diff.add_argument(
        "--min-latency-base-ms",
        type=_non_negative,
        default=50.0,
        metavar="MS",
        help="ignore latency ratios when the base p50 is below MS (default: 50)",
    )
    diff.add_argument(
        "--min-similarity",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="a reply less similar than F (0..1) to the base is a regression (default: 0, off)",
    )
    diff.add_argument(
        "--max-error-rate-increase",
        type=_fraction,
        default=0.05,
        metavar="F",
        help="an error rate up by more than F (0..1) is a regression (default: 0.05)",
    )

    trend = sub.add_parser(
        "trend",
        help="error rates and latency per day and provider/model over many runs",
        description="Read every run under DIR (cron history) and group turns per UTC day "
        "and provider/model.",
    )
    trend.add_argument("dir", metavar="DIR")
    _add_output_options(trend, "trend")
    trend.add_argument("--csv", metavar="FILE", help="also write the table as CSV")

    merge = sub.add_parser(
        "merge",
        help="combine the shard runs of one suite into one run",
        description="Combine runs made with --shard K/N into one run directory, so that "
        "report and diff see one run. Refuses mixed settings or overlapping shards.",
    )
    merge.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    merge.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    merge.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge even if some shards are missing (the run is marked partial)",
    )
    merge.add_argument("--json", action="store_true", help="print the result as JSON")

    serve = sub.add_parser(
        "serve",
        help="run the built-in local endpoint",
        description="Serve the built-in local OpenAI-compatible endpoint: a deterministic "
        "echo for demos and tests, not a language model.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=1337)
    _add_local_server_options(serve, prefix="")
    return parser


def _add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print the {what} as JSON")
    parser.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML page with charts"
    )


def _add_local_server_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument(
        f"--{prefix}token-delay",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="built-in endpoint: seconds between tokens",
    )
    parser.add_argument(
        f"--{prefix}first-token-delay",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="built-in endpoint: seconds before the first token",
    )
    parser.add_argument(
        f"--{prefix}faults",
        metavar="SPEC|FILE",
        help="built-in endpoint: fault plan (a spec string or a YAML file)",
    )


def _fault_plan(spec: str | None) -> Any:
    if not spec:
        return None
    from runner.faults import FaultPlan

    if os.path.isfile(spec):
        return FaultPlan.from_file(spec)
    return FaultPlan.parse(spec)


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from runner.scenario import load_paths

    scenarios = load_paths(args.paths)
    files = len({sc.file for sc in scenarios})
    turns = sum(len(sc.turns) for sc in scenarios)
    if args.json:
        out.write(
            json.dumps({"ok": True, "files": files, "scenarios": len(scenarios), "turns": turns})
            + "\n"
        )
    else:
        out.write(f"ok: {len(scenarios)} scenario(s), {turns} turn(s) in {files} file(s)\n")
    return int(ExitStatus.OK)


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from runner.report import build_report, render_json, render_text

    report = build_report(Path(args.run_dir))
    if args.html:
        from runner.htmlreport import render_report_html

        _write_text(args.html, render_report_html(report))
    out.write(
        json.dumps(render_json(report), indent=2) + "\n" if args.json else render_text(report)
    )
    return int(ExitStatus.OK)


def _cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    from runner.diff import DiffThresholds, build_diff, render_diff_html, render_json, render_text

    thresholds = DiffThresholds(
        max_latency_ratio=args.max_latency_ratio,
        min_latency_base_ms=args.min_latency_base_ms,
        min_similarity=args.min_similarity,
        max_error_rate_increase=args.max_error_rate_increase,
    )
    diff = build_diff(Path(args.base), Path(args.new), thresholds=thresholds)
    if args.html:
        _write_text(args.html, render_diff_html(diff))
    out.write(json.dumps(render_json(diff), indent=2) + "\n" if args.json else render_text(diff))
    return int(ExitStatus.CHECKS_FAILED) if diff.regressions else int(ExitStatus.OK)


def _cmd_trend(args: argparse.Namespace, out: TextIO) -> int:
    from runner.trend import build_trend, render_json, render_text, render_trend_html, write_csv

    trend = build_trend(Path(args.dir))
    if args.csv:
        write_csv(trend, Path(args.csv))
    if args.html:
        _write_text(args.html, render_trend_html(trend))
    out.write(json.dumps(render_json(trend), indent=2) + "\n" if args.json else render_text(trend))
    return int(ExitStatus.OK)


def _cmd_merge(args: argparse.Namespace, out: TextIO) -> int:
    from runner.merge import merge_runs

    run_dir = merge_runs(
        [Path(p) for p in args.run_dirs], Path(args.out), allow_partial=args.allow_partial
    )
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if args.json:
        out.write(json.dumps({"run_dir": str(run_dir), **record}) + "\n")
    else:
        counts = record.get("counts", {})
        out.write(
            f"merged {len(args.run_dirs)} run(s): {counts.get('ok', 0)} ok, "
            f"{counts.get('error', 0)} error, {counts.get('skipped', 0)} skipped "
            f"[{record.get('status')}] -> {run_dir}\n"
        )
    return int(record.get("exit_status") or 0)


def _cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from runner.server import serve

    def ready(url: str) -> None:
        out.write(f"serving the built-in local endpoint at {url} (Ctrl-C to stop)\n")
        out.flush()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # stop as Ctrl-C does: close the socket, end the threads

    signal.signal(signal.SIGTERM, on_term)
    serve(
        args.host,
        args.port,
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
        faults=_fault_plan(args.faults),
        ready=ready,
    )
    return int(ExitStatus.OK)


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.paths and not args.resume:
        raise UsageError("run: give scenario files or folders (PATH...), or --resume RUN_DIR")
    if args.paths and args.resume:
        raise UsageError("run: --resume takes its scenario files from run.json; give no PATH")
    if not args.lock:
        return _run(args, out, err)
    from runner.lock import RunLock

    lock = RunLock(args.lock).acquire()
    if lock.took_over:
        held = lock.took_over
        err.write(
            f"runner: took over the lock {args.lock} left by pid {held.get('pid')} "
            f"(started {held.get('started_at')}), which is no longer running\n"
        )
    try:
        return _run(args, out, err)
    finally:
        lock.release()


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from runner.scenario import load_paths

    plan: Any = None
    recorded: dict[str, Any] = {}
    if args.resume:
        from runner.resume import plan_resume

        plan = plan_resume(Path(args.resume), force=args.force)
        scenarios = plan.scenarios
        recorded = plan.record.get("settings") or {}
        if plan.torn_bytes:
            err.write(
                f"runner: cut a torn last line ({plan.torn_bytes} bytes) from the transcript\n"
            )
        err.write(
            f"runner: resuming {plan.run_id}: {len(plan.scenarios) - len(plan.todo)} scenario(s) "
            f"kept, {len(plan.todo)} to run again\n"
        )
    else:
        scenarios = load_paths(args.paths)  # validate everything before the first request
        if args.shard:
            from runner.shard import parse_shard, select

            k, n = parse_shard(args.shard)
            scenarios = select(scenarios, k, n)
    faults = _fault_plan(args.local_faults)

    from runner.client import Timeouts, normalize_endpoint
    from runner.engine import Run, RunSettings
    from runner.progress import make_progress
    from runner.retry import RetryPolicy

    def opt(name: str, default: Any) -> Any:
        """A flag given on the command line wins; on resume, then the recorded setting."""
        value = getattr(args, name)
        if value is not None:
            return value
        return recorded.get(name, default) if recorded.get(name) is not None else default

    timeouts = recorded.get("timeouts") or {}
    local = args.local or bool(recorded.get("local"))
    server: Any = None
    if local:
        if args.endpoint:
            raise UsageError("--local and --endpoint cannot be used together")
        from runner.server import LocalServer

        server = LocalServer(
            token_delay=args.local_token_delay,
            first_token_delay=args.local_first_token_delay,
            faults=faults,
        ).start()
        endpoint = server.url
    else:
        if faults is not None:
            raise UsageError("--local-faults needs --local")
        endpoint = normalize_endpoint(
            args.endpoint
            or (plan.record.get("endpoint") if plan else None)
            or os.environ.get("RUNNER_ENDPOINT")
            or DEFAULT_ENDPOINT
        )
    api_key_env = opt("api_key_env", "RUNNER_API_KEY")
    try:
        settings = RunSettings(
            endpoint=endpoint,
            out_dir=Path(args.out),
            concurrency=opt("concurrency", 4),
            retry=RetryPolicy(max_attempts=opt("max_attempts", 4)),
            timeouts=Timeouts(
                connect=args.connect_timeout or timeouts.get("connect", 10.0),
                first_byte=args.first_byte_timeout or timeouts.get("first_byte", 120.0),
                idle=args.idle_timeout or timeouts.get("idle", 120.0),
                turn=args.turn_timeout or timeouts.get("turn", 600.0),
            ),
            history=opt("history", None),
            provider=opt("provider", None),
            model=opt("model", None),
            api_key=os.environ.get(api_key_env) or None,
            api_key_env=api_key_env,
            fsync_every_line=args.fsync_every_line or bool(recorded.get("fsync_every_line")),
            include_usage=args.include_usage or bool(recorded.get("include_usage")),
            paths=tuple(recorded.get("paths") or args.paths),
            local=local,
            max_runtime=args.max_runtime,
            repeat=opt("repeat", 1),
            rate=opt("rate", None),
            strict_openai=bool(opt("strict_openai", False)),
            shard=opt("shard", None),
        )
        units = plan.todo if plan else None
        repeat = opt("repeat", 1)
        if units is not None:
            total = sum(len(sc.turns) for sc, _ in units)
        else:
            total = sum(len(sc.turns) for sc in scenarios) * repeat
        progress = make_progress(args.progress, total, err, args.progress_interval)
        failures: list[str] = []

        def on_record(rec: Any) -> None:
            progress.update(rec)
            if rec["status"] == "error" and len(failures) < 5:
                failures.append(f"{rec['scenario']} turn {rec['turn']}: {rec['error']['message']}")

        run = Run(scenarios, settings, on_record=on_record, units=units)

        def on_signal(signum: int, frame: Any) -> None:
            status = ExitStatus.TERMINATED if signum == signal.SIGTERM else ExitStatus.INTERRUPTED
            run.stop("interrupted", int(status))

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = run.execute(plan)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            progress.close()
    finally:
        if server is not None:
            server.stop()
    for line in failures:
        err.write(f"runner: error: {line}\n")
    if summary.error > len(failures):
        err.write(f"runner: ... {summary.error - len(failures)} more failed turn(s)\n")
    if args.json:
        out.write(json.dumps(summary.to_json()) + "\n")
    else:
        out.write(summary.line() + "\n")
    return summary.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runner`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "validate":
            return _cmd_validate(args, out)
        if args.command == "serve":
            return _cmd_serve(args, out)
        if args.command == "report":
            return _cmd_report(args, out)
        if args.command == "diff":
            return _cmd_diff(args, out)
        if args.command == "trend":
            return _cmd_trend(args, out)
        if args.command == "merge":
            return _cmd_merge(args, out)
        return _cmd_run(args, out, err)
    except ScenarioError as exc:
        err.write(f"runner: {exc}\n")
        return int(ExitStatus.USAGE)
    except LockHeldError as exc:
        err.write(f"runner: {exc}\n")
        return int(ExitStatus.LOCKED)
    except RunnerError as exc:
        err.write(f"runner: error: {exc}\n")
        return int(ExitStatus.USAGE)
    except KeyboardInterrupt:
        err.write("runner: interrupted\n")
        return int(ExitStatus.INTERRUPTED)
    except OSError as exc:
        err.write(f"runner: error: {exc}\n")
        return int(ExitStatus.USAGE)


def run_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run_main()
