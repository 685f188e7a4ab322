"""Exit statuses: a contract with users' scripts and cron jobs."""

from __future__ import annotations

import enum

__all__ = ["ExitStatus"]


class ExitStatus(enum.IntEnum):
    OK = 0  # every turn ok (and every check passed)
    CHECKS_FAILED = 1  # no turn errored, but an expectation failed
    USAGE = 2  # bad command line, scenario or settings; nothing was sent
    TURN_ERRORS = 3  # at least one turn ended in error
    LOCKED = 4  # another run holds the lock
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM
