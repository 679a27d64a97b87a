"""Run directories: private files, the run lock, never-started runs, read-only journals."""

from __future__ import annotations

import os
import stat
from array import array
from pathlib import Path

import pytest

from bulkops.engine.chunks import ChunkEvent
from bulkops.engine.journal import ChunkRecord, Journal
from bulkops.engine.rundirs import (
    NOT_STARTED,
    RunLock,
    is_running,
    mark_not_started,
    new_journal,
    open_new_run,
)
from bulkops.engine.runinfo import describe_run
from bulkops.errors import ConfigError, InputError


def _chunk(seq: int = 0) -> ChunkRecord:
    return ChunkRecord(
        seq=seq, kind="add", rows=1, first_line=2, last_line=2, start_offset=0,
        end_offset=10, digest="d", body_bytes=10, lines=array("Q", [2]), after=None,
    )  # fmt: skip


def test_a_new_run_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """Directory 0700, journal 0600 (and so its -wal and -shm)."""
    old = os.umask(0)
    try:
        journal, lock = open_new_run(tmp_path / "a" / "run")
    finally:
        os.umask(old)
    try:
        journal.set_meta(state="running")
        assert stat.S_IMODE((tmp_path / "a" / "run").stat().st_mode) == 0o700
        for path in (tmp_path / "a" / "run").iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        journal.close()
        lock.release()


def test_the_lock_is_held_by_one_process_and_dropped_when_released(tmp_path: Path) -> None:
    """A second holder is refused; status sees the run as running only while it is held."""
    lock = RunLock(tmp_path).acquire()
    try:
        assert is_running(tmp_path)
        with pytest.raises(ConfigError, match="another process"):
            RunLock(tmp_path).acquire()
    finally:
        lock.release()
    assert not is_running(tmp_path)
    RunLock(tmp_path).acquire().release()


def test_a_run_that_never_started_gives_its_directory_back(tmp_path: Path) -> None:
    """Marked not-started: a new run replaces its journal; a started one is refused."""
    journal, lock = open_new_run(tmp_path)
    journal.plan(_chunk())
    mark_not_started(journal, InputError("no usable header", path="x.csv"))
    journal.close()
    lock.release()
    info = describe_run(tmp_path)
    assert (info.state, info.exit_code) == (NOT_STARTED, 4)
    assert "no usable header" in (info.error or "")
    journal = new_journal(tmp_path)
    assert journal.chunks() == []
    journal.plan(_chunk())
    journal.apply(0, ChunkEvent.SEND)
    mark_not_started(journal, ConfigError("late"))  # something was sent: it did start
    journal.set_meta(state="running")
    journal.close()
    with pytest.raises(ConfigError, match="already holds a run"):
        new_journal(tmp_path)
    assert describe_run(tmp_path).state == "interrupted"  # running, but nobody holds it


def test_reading_a_run_writes_nothing(tmp_path: Path) -> None:
    """describe_run opens the journal read-only: the file and its mtime stay as they are."""
    journal = Journal(tmp_path, create=True)
    journal.set_meta(state="complete", rows_read=0)
    journal.close()
    path = tmp_path / "journal.sqlite"
    os.utime(path, (1_000_000, 1_000_000))
    before = path.read_bytes()
    info = describe_run(tmp_path)
    assert info.state == "complete"
    assert info.age_seconds > 1_000_000
    assert path.stat().st_mtime == 1_000_000
    assert path.read_bytes() == before
