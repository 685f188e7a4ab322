"""The baselines the runner is measured against, written the way people write them.

**B0** is gpt4free's own API example (``etc/examples/api_completions_copilot.py``)
as written: ``requests.post(url, json=body, stream=True)`` with no session,
``iter_lines()``, ``json.loads(line[6:])``. **B1** is the same loop with one
``requests.Session`` per thread (keep-alive). Both keep the server's
conversation (only the new user message is sent, with a ``conversation_id``)
and, like the runner, append one JSON line per turn to a transcript.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import requests

__all__ = ["TurnProbe", "run_baseline", "turn"]

# Called with (arrival perf_counter, parsed chunk) for every data line, when probing.
TurnProbe = Callable[[float, dict[str, Any]], None]


def turn(
    post: Callable[..., requests.Response],
    url: str,
    user: str,
    conversation_id: str,
    probe: TurnProbe | None = None,
) -> str:
    """One turn of the example loop; returns the reply text."""
    body = {
        "model": "",
        "stream": True,
        "messages": [{"role": "user", "content": user}],
        "conversation_id": conversation_id,
    }
    response = post(url, json=body, stream=True)
    response.raise_for_status()
    parts = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            try:
                json_data = json.loads(line[6:])
                if probe is not None:
                    probe(time.perf_counter(), json_data)
                if json_data.get("error"):
                    break
                content = json_data.get("choices", [{"delta": {}}])[0]["delta"].get("content", "")
                if content:
                    parts.append(content)
            except json.JSONDecodeError:
                pass
    return "".join(parts)


def run_baseline(
    kind: str,
    url: str,
    conversations: Sequence[Sequence[str]],
    transcript: IO[str],
    concurrency: int = 1,
) -> int:
    """Run ``conversations`` (lists of user messages) with B0 or B1; return turns done."""
    lock = threading.Lock()
    source: Iterator[Sequence[str]] = iter(conversations)
    done = [0]

    def worker() -> None:
        session = requests.Session() if kind == "b1" else None
        post = session.post if session is not None else requests.post
        while True:
            with lock:
                users = next(source, None)
            if users is None:
                break
            conversation_id = str(uuid.uuid4())
            for number, user in enumerate(users, 1):
                reply = turn(post, url, user, conversation_id)
                line = json.dumps(
                    {
                        "conversation_id": conversation_id,
                        "turn": number,
                        "user": user,
                        "reply": reply,
                        "status": "ok",
                    },
                    ensure_ascii=False,
                )
                with lock:
                    transcript.write(line + "\n")
                    transcript.flush()
                    done[0] += 1
        if session is not None:
            session.close()

    if concurrency == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return done[0]
