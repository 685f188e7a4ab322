"""The run directory: line-atomic appends, torn lines, atomic run.json, run ids."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from runner.transcript import (
    TranscriptWriter,
    create_run_dir,
    iter_records,
    new_run_id,
    write_json_atomic,
)


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path)
    big = "é" * 70_000  # larger than a pipe buffer: one write call per line still

    def work(n: int) -> None:
        for i in range(50):
            writer.write({"worker": n, "i": i, "text": big if i % 10 == 0 else "x"})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 300 == writer.lines
    records = [json.loads(line) for line in lines]
    for n in range(6):
        assert [r["i"] for r in records if r["worker"] == n] == list(range(50))


def test_each_line_is_on_disk_as_soon_as_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path, fsync_interval=3600)
    writer.write({"a": 1})
    # No user-space buffer: another reader sees the line before close().
    assert path.read_text() == '{"a": 1}\n'
    writer.close()


def test_fsync_every_line_option(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import runner.transcript as transcript

    synced: list[int] = []
    real = transcript.os.fsync
    monkeypatch.setattr(transcript.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    writer = TranscriptWriter(tmp_path / "t.jsonl", fsync_every_line=True, fsync_interval=3600)
    for i in range(3):
        writer.write({"i": i})
    assert len(synced) == 3
    writer.close()
    grouped = TranscriptWriter(tmp_path / "u.jsonl", fsync_interval=3600)
    for i in range(3):
        grouped.write({"i": i})
    grouped.close()
    assert len(synced) == 4  # one at close


def test_torn_last_line_is_skipped_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "tor')
    assert [r["a"] for r in iter_records(path)] == [1, 2]


def test_run_ids_sort_by_time_and_are_unique(tmp_path: Path) -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    rid = next(iter(ids))
    assert rid[8] == "T" and rid[15] == "Z" and rid[16] == "-"
    dirs = {create_run_dir(tmp_path)[0] for _ in range(20)}
    assert len(dirs) == 20 and len(list(tmp_path.iterdir())) == 20


def test_write_json_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json_atomic(path, {"status": "running"})
    write_json_atomic(path, {"status": "complete", "n": "ü"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "complete", "n": "ü"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_utc_now_is_rfc3339_with_milliseconds_and_tracks_the_clock() -> None:
    import re
    import time
    from datetime import datetime, timezone

    from runner.transcript import utc_now

    for _ in range(3):
        before = time.time()
        stamp = utc_now()
        after = time.time()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        # Milliseconds are truncated, as isoformat(timespec="milliseconds") does.
        assert before - 0.001 <= when.timestamp() <= after


def test_records_are_written_as_json_dumps_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record = {"user": "é ✓ 😀", "n": 1.5, "none": None, "nested": {"a": [1, "b"]}}
    with TranscriptWriter(path) as writer:
        writer.write(record)
    assert path.read_bytes() == (json.dumps(record, ensure_ascii=False) + "\n").encode()
