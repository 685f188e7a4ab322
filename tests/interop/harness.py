"""Helpers for the interop tests: start a server process, run the runner, read its output.

Everything here waits by polling with a bounded deadline; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
CI = REPO / ".ci"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UVICORN_PORT = re.compile(r"Uvicorn running on https?://[^\s:]+:(\d+)")
_POLL = 0.05

# Proxies configured on a machine must never see loopback traffic.
_NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class ServerFailed(RuntimeError):
    """A third-party server did not come up; the message carries its log tail."""


def pinned_version(name: str, package: str) -> str:
    """The version of ``package`` pinned in ``tests/interop/<name>.constraints.txt``."""
    path = Path(__file__).with_name(f"{name}.constraints.txt")
    for line in path.read_text(encoding="utf-8").splitlines():
        pkg, sep, version = line.partition("==")
        if sep and pkg.strip().lower() == package.lower():
            return version.strip()
    raise LookupError(f"{package} is not pinned in {path.name}")


def installed_version(python: Path, package: str) -> str:
    """The version of ``package`` in the virtualenv whose interpreter is ``python``."""
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@dataclass
class ServerProcess:
    """A third-party server running as a child process, its output in ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return _ANSI.sub("", text)[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; only this process is touched."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    probe: Callable[[ServerProcess], bool],
    timeout: float = 90.0,
) -> ServerProcess:
    """Start ``argv`` (a uvicorn-based server bound to port 0) and wait until ``probe`` holds.

    The port is read from uvicorn's "Uvicorn running on" line, so no port is
    guessed and no other process can take it in between.
    """
    log = cwd / f"{name}.log"
    full_env = {**os.environ, **_NO_PROXY, **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(name, process, log)
    deadline = time.monotonic() + timeout
    try:
        while server.port == 0:
            if process.poll() is not None:
                raise ServerFailed(f"{name} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"{name} printed no listening port in {timeout:g} s")
            found = _UVICORN_PORT.search(server.log_tail(20000))
            if found:
                server.port = int(found.group(1))
            else:
                time.sleep(_POLL)
        while not probe(server):
            if process.poll() is not None:
                raise ServerFailed(f"{name} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"{name} did not answer its probe in {timeout:g} s")
            time.sleep(_POLL)
    except BaseException as exc:
        server.stop()
        if isinstance(exc, ServerFailed):
            raise ServerFailed(f"{exc}; log tail:\n{server.log_tail()}") from None
        raise
    return server


def probe_get(
    path: str, headers: Mapping[str, str] | None = None
) -> Callable[[ServerProcess], bool]:
    """A probe that holds once ``GET base_url + path`` answers 200."""

    def probe(server: ServerProcess) -> bool:
        try:
            reply = requests.get(server.base_url + path, headers=dict(headers or {}), timeout=5)
        except requests.RequestException:
            return False
        return reply.status_code == 200

    return probe


# --- the servers ---------------------------------------------------------------------


def seed_g4f_cache(cache: Path, default_upstream: str) -> None:
    """Make ``g4f api`` start offline.

    g4f 8.x resolves provider names at import time through a providers list it
    downloads once a day into ``<cache>/.models/<YYYY-MM-DD>/providers.json``. A
    seeded file keeps it offline; the days around today cover a run that crosses
    midnight (g4f uses local time). Requests without a provider go to the
    ``default`` entry, ``default_upstream``.
    """
    listing = {
        "providers": {"default": {"baseUrl": default_upstream}},
        "defaultModels": {"default": ""},
    }
    today = dt.date.today()
    for offset in (-1, 0, 1):
        folder = cache / ".models" / (today + dt.timedelta(days=offset)).isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "providers.json").write_text(json.dumps(listing), encoding="utf-8")


def start_g4f(venv: Path, home: Path, default_upstream: str) -> ServerProcess:
    """``g4f api`` from ``venv``, offline, with its state under ``home``."""
    seed_g4f_cache(home / "cache", default_upstream)
    return start_server(
        "g4f",
        [
            str(venv / "bin" / "g4f"),
            "api",
            "--bind",
            "127.0.0.1:0",
            "--no-gui",
            "--disable-pa-auto-download",
            "--disable-colors",
        ],
        cwd=home,
        env={
            "HOME": str(home),
            "G4F_CONFIG_DIR": str(home / "config"),
            "G4F_CACHE_DIR": str(home / "cache"),
        },
        probe=probe_get("/models"),
    )


def litellm_config(upstreams: Mapping[str, str], mock_reply: str) -> dict[str, Any]:
    """A proxy config: one ``openai/<name>`` model per upstream base URL, plus ``mock``."""
    models: list[dict[str, Any]] = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": base_url,
                "api_key": "unused-by-the-upstream",
            },
        }
        for name, base_url in upstreams.items()
    ]
    models.append(
        {
            "model_name": "mock",
            "litellm_params": {"model": "openai/mock", "mock_response": mock_reply},
        }
    )
    return {
        "model_list": models,
        # The runner owns retries: LiteLLM's own would hide the attempts.
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
        "router_settings": {"num_retries": 0},
    }


def start_litellm(venv: Path, home: Path, config: Mapping[str, Any], key: str) -> ServerProcess:
    """LiteLLM's proxy from ``venv`` with ``config``; ``key`` is its master key."""
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    return start_server(
        "litellm",
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        cwd=home,
        env={
            "HOME": str(home),
            # LiteLLM refuses to start without a master key.
            "LITELLM_MASTER_KEY": key,
            # Use the cost map bundled in the wheel instead of fetching one.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        },
        probe=probe_get("/models", {"Authorization": f"Bearer {key}"}),
    )


# --- the runner, as its users run it -------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One ``runner run --json`` process: exit status, summary and transcript lines."""

    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    records: list[dict[str, Any]]

    def turns(self, scenario: str) -> list[dict[str, Any]]:
        """The scenario's turn records, in turn order."""
        found = [r for r in self.records if r["scenario"] == scenario]
        return sorted(found, key=lambda r: int(r["turn"]))

    def explain(self) -> str:
        lines = [f"exit {self.returncode}", f"stderr: {self.stderr[-3000:]}"]
        for r in self.records:
            lines.append(
                f"{r['scenario']}#{r['turn']} {r['status']} {r['reply']!r} {r.get('error')}"
            )
        return "\n".join(lines)


def write_scenario(folder: Path, name: str, **fields: Any) -> Path:
    """Write a one-scenario YAML file named ``<name>.yaml`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}, sort_keys=False), encoding="utf-8")
    return path


def run_runner(
    paths: Sequence[Path],
    *args: str,
    out: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> RunResult:
    """``python -m runner run PATHS --out OUT --json --progress off ARGS`` as a subprocess."""
    argv = [
        sys.executable,
        "-m",
        "runner",
        "run",
        *(str(p) for p in paths),
        "--out",
        str(out),
        "--json",
        "--progress",
        "off",
        *args,
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env={**base, **_NO_PROXY, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    if proc.stdout.strip():
        try:
            summary = json.loads(proc.stdout)
        except ValueError:
            summary = {}
    run_dir = summary.get("run_dir")
    if run_dir:
        transcript = Path(run_dir) / "transcript.jsonl"
        if transcript.exists():
            for line in transcript.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return RunResult(proc.returncode, proc.stdout, proc.stderr, summary, records)
