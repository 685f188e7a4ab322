"""Fixtures that start real third-party servers on 127.0.0.1.

* ``g4f``: gpt4free's API server (``g4f api``) from ``.ci/.venv-g4f``. Requests
  name their upstream in ``provider`` (an OpenAI-compatible base URL), so each
  test points g4f at its own built-in endpoint from the ``upstream`` factory.
* ``litellm``: LiteLLM's proxy from ``.ci/.venv-litellm``, configured with one
  model per fault profile (each backed by a built-in endpoint with that fault
  plan) and a ``mock`` model answered by LiteLLM itself (``mock_response``).

Both are started once per session and bound to port 0. A missing virtualenv
skips the tests locally, with the command that installs it; under CI (env
``CI`` set) it fails them instead, so an interop job can never pass by running
nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from runner.faults import FaultPlan
from runner.server import LocalServer
from tests.interop.harness import (
    CI,
    ServerProcess,
    installed_version,
    litellm_config,
    start_g4f,
    start_litellm,
)


def _not_installed(what: str, venv: Path) -> NoReturn:
    message = (
        f"{what} is not installed: {venv.relative_to(CI.parent)} is missing; "
        "run .ci/interop-setup to install it"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _venv(name: str, what: str, executable: str) -> Path:
    venv = CI / f".venv-{name}"
    if not (venv / "bin" / executable).exists():
        _not_installed(what, venv)
    return venv


@pytest.fixture
def upstream() -> Iterator[Callable[..., LocalServer]]:
    """Start built-in endpoints for one test: ``upstream(faults="status=503")``."""
    started: list[LocalServer] = []

    def start(faults: str | None = None, **options: float) -> LocalServer:
        plan = FaultPlan.parse(faults) if faults else None
        server = LocalServer("127.0.0.1", 0, faults=plan, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- gpt4free ----------------------------------------------------------------------


@dataclass
class G4F:
    """A running ``g4f api`` server."""

    process: ServerProcess
    version: str
    home: Path

    @property
    def endpoint(self) -> str:
        """The base URL to give ``runner run --endpoint``."""
        return self.process.base_url


@pytest.fixture(scope="session")
def g4f(tmp_path_factory: pytest.TempPathFactory) -> Iterator[G4F]:
    venv = _venv("g4f", "gpt4free (g4f[api])", "g4f")
    home = tmp_path_factory.mktemp("g4f")
    # Requests without a provider go to g4f's "default" provider: keep it local too.
    with LocalServer("127.0.0.1", 0) as default_upstream:
        process = start_g4f(venv, home, default_upstream.base_url)
        try:
            yield G4F(process, installed_version(venv / "bin" / "python", "g4f"), home)
        finally:
            process.stop()


# --- LiteLLM -----------------------------------------------------------------------

# model name -> fault plan of the built-in endpoint behind it ("" = no faults)
LITELLM_PROFILES: dict[str, str] = {
    "echo": "",
    "fail-500": "status=500",
    "fail-429": "status=429,retry_after=5",
    "fail-401": "status=401",
    "fail-400": "status=400",
    "fail-midstream": "inband_after=2",
    "malformed": "malformed_after=1",
    "no-done": "no_done",
    "retry-turn-2": "turn=2,attempt=1:status=503",
}
LITELLM_MOCK_REPLY = "This reply comes from LiteLLM itself."


@dataclass
class LiteLLM:
    """A running LiteLLM proxy and the built-in endpoints behind its models."""

    process: ServerProcess
    version: str
    api_key: str
    upstreams: dict[str, LocalServer] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.process.base_url


@pytest.fixture(scope="session")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLM]:
    venv = _venv("litellm", "LiteLLM proxy (litellm[proxy])", "litellm")
    home = tmp_path_factory.mktemp("litellm")
    upstreams: dict[str, LocalServer] = {}
    try:
        for name, spec in LITELLM_PROFILES.items():
            plan = FaultPlan.parse(spec) if spec else None
            upstreams[name] = LocalServer("127.0.0.1", 0, faults=plan).start()
        config = litellm_config(
            {name: server.base_url for name, server in upstreams.items()}, LITELLM_MOCK_REPLY
        )
        # LiteLLM refuses to start without a master key; the runner sends it
        # through --api-key-env.
        key = "sk-" + secrets.token_hex(32)
        process = start_litellm(venv, home, config, key)
        try:
            version = installed_version(venv / "bin" / "python", "litellm")
            yield LiteLLM(process, version, key, upstreams)
        finally:
            process.stop()
    finally:
        for server in upstreams.values():
            server.stop()
