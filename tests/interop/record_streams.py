"""Record the stream bodies of real servers into ``tests/data/streams/``.

    python -m tests.interop.record_streams          # after .ci/interop-setup

Starts gpt4free's API server and LiteLLM's proxy from their virtualenvs (as the
interop fixtures do), with the built-in endpoint behind them, sends one request
per case and writes each response body exactly as received (after HTTP chunked
decoding), one ``.sse`` file per case. ``index.yaml`` describes what each file
must decode to; re-recording changes ids and timestamps only.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

from runner.faults import FaultPlan
from runner.server import LocalServer
from tests.interop.harness import CI, REPO, litellm_config, start_g4f, start_litellm

OUT = REPO / "tests" / "data" / "streams"
USER = [{"role": "user", "content": "Hello there"}]


def post(url: str, body: dict[str, Any], key: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with requests.post(url, json=body, headers=headers, stream=True, timeout=60) as reply:
        print(f"{url} -> {reply.status_code} {reply.headers.get('content-type')}")
        return b"".join(reply.iter_content(chunk_size=None))


def record(name: str, body: bytes) -> None:
    (OUT / name).write_bytes(body)
    print(f"  wrote {name} ({len(body)} bytes)")


def main() -> int:
    ok = LocalServer("127.0.0.1", 0).start()
    failing = LocalServer("127.0.0.1", 0, faults=FaultPlan.parse("inband_after=2")).start()
    truncated = LocalServer("127.0.0.1", 0, faults=FaultPlan.parse("no_done")).start()
    servers = [ok, failing, truncated]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            (home / "g4f").mkdir()
            (home / "litellm").mkdir()

            g4f = start_g4f(CI / ".venv-g4f", home / "g4f", ok.base_url)
            try:
                chat = f"{g4f.base_url}/chat/completions"
                plain = {"model": "local-echo", "stream": True, "messages": USER}
                record("g4f_stream.sse", post(chat, {**plain, "provider": ok.base_url}))
                record(
                    "g4f_include_usage.sse",
                    post(
                        chat,
                        {
                            **plain,
                            "provider": ok.base_url,
                            "stream_options": {"include_usage": True},
                        },
                    ),
                )
                record(
                    "g4f_midstream_error.sse", post(chat, {**plain, "provider": failing.base_url})
                )
            finally:
                g4f.stop()

            key = "sk-" + secrets.token_hex(32)
            config = litellm_config(
                {"echo": ok.base_url, "failing": failing.base_url, "cut": truncated.base_url},
                "This reply comes from LiteLLM itself.",
            )
            litellm = start_litellm(CI / ".venv-litellm", home / "litellm", config, key)
            try:
                chat = f"{litellm.base_url}/chat/completions"
                usage = {
                    "stream": True,
                    "messages": USER,
                    "stream_options": {"include_usage": True},
                }
                record("litellm_include_usage.sse", post(chat, {**usage, "model": "echo"}, key))
                record("litellm_mock.sse", post(chat, {**usage, "model": "mock"}, key))
                record(
                    "litellm_midstream_error.sse",
                    post(chat, {"stream": True, "messages": USER, "model": "failing"}, key),
                )
                record(
                    "litellm_completes_a_truncated_upstream.sse",
                    post(chat, {"stream": True, "messages": USER, "model": "cut"}, key),
                )
            finally:
                litellm.stop()
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
