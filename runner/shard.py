"""Sharding: which scenarios belong to shard K of N, so N machines can split a suite.

A scenario's shard depends only on its file's *base name* and its own name::

    shard = int(sha256(f"{basename(file)}\\0{name}")[:16 hex digits]) % N + 1

* The N jobs of a sharded run compute the same partition wherever the suite is
  checked out and however its paths are written on the command line
  (``scenarios/``, ``./scenarios/a.yaml`` or an absolute path): the directory
  part never counts.
* Reordering files or scenarios changes nothing; adding or removing a scenario
  moves no other scenario to another shard.
* Scenario names are unique within a run (the loader refuses duplicates), so
  every scenario lands in exactly one shard.

Shards are balanced by hashing, not by counting: for a suite much larger than
N they hold about the same number of scenarios, but a small suite can leave a
shard empty. An empty shard is a valid run with no turns.

K is 1-based, as people count: ``--shard 1/4`` … ``--shard 4/4``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Protocol, TypeVar

from runner.errors import UsageError

__all__ = ["parse_shard", "select", "shard_of"]

_SHARD = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*")


def shard_of(file: str, name: str, n: int) -> int:
    """The 1-based shard (1..n) of scenario ``name`` defined in ``file``."""
    if n < 1:
        raise ValueError(f"the number of shards must be at least 1, got {n}")
    key = f"{PurePath(file).name}\0{name}".encode()
    return int(hashlib.sha256(key).hexdigest()[:16], 16) % n + 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; a UsageError says how to fix anything else."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--shard: {text!r} is not K/N; write e.g. --shard 2/4 for the second of four shards"
        )
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise UsageError(f"--shard {text}: N must be at least 1")
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text}: K must be between 1 and {n} (shards are counted from 1)")
    return k, n


class _Named(Protocol):  # what select() reads; a Scenario has both
    @property
    def file(self) -> str: ...

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def select(scenarios: Iterable[N], k: int, n: int) -> list[N]:
    """The scenarios of shard ``k`` of ``n``, in their original order."""
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"shard {k}/{n}: K must be between 1 and N, and N at least 1")
    return [sc for sc in scenarios if shard_of(sc.file, sc.name, n) == k]
