"""--lock: one run at a time; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import LockHeldError
from runner.lock import RunLock


def test_second_holder_is_refused_with_pid_and_start(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with RunLock(path):
        with pytest.raises(LockHeldError) as info:
            RunLock(path).acquire()
    assert f"pid {os.getpid()}" in str(info.value)
    assert "started 20" in str(info.value)
    assert info.value.pid == os.getpid()
    # Released on exit: the next run takes it without a takeover message.
    lock = RunLock(path).acquire()
    assert lock.took_over is None
    lock.release()


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    code = (
        "import os, sys; from runner.lock import RunLock; "
        f"RunLock({str(path)!r}).acquire(); os._exit(0)"  # dies holding it, no cleanup
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    dead = json.loads(path.read_text())
    lock = RunLock(path).acquire()
    assert lock.took_over is not None and lock.took_over["pid"] == dead["pid"]
    lock.release()


def test_cli_exit_4_when_locked(tmp_path: Path) -> None:
    sc = tmp_path / "s.yaml"
    sc.write_text("turns: [hi]\n")
    path = tmp_path / "run.lock"
    cmd = [
        sys.executable,
        "-m",
        "runner",
        "run",
        str(sc),
        "--local",
        "--lock",
        str(path),
        "--out",
        str(tmp_path / "out"),
    ]
    with RunLock(path):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4
    assert f"pid {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert path.read_text() == ""  # a clean exit leaves no holder behind
