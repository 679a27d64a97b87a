"""An export's output file and its checkpoints.

* **Atomic output.** Rows are written to a temporary file next to the target
  (``.{name}.{run}.part``), which is renamed over the target only when complete, after an
  ``fsync``; an interrupted export never leaves a partial target.
* **Checkpoints.** One row in the run's journal file, replaced atomically: the byte offset
  of the temporary file's complete part, the rows in it, and the cursor to continue from.
  A resumed run truncates the temporary file to that offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import BinaryIO

import msgspec

from bulkops.engine.journal import JOURNAL_NAME
from bulkops.errors import ConfigError

__all__ = ["Checkpoint", "Checkpoints", "Output", "crash_point_after_rows", "temp_path"]

_ENCODER = msgspec.json.Encoder()


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """What a resumed run continues from (one row of the ``export_checkpoint`` table)."""

    offset: int  # complete bytes of the temporary file
    rows: int  # rows in those bytes
    href: str | None = None  # feed: the next page to fetch (None: every page written)
    pages: int = 0
    activity_id: str | None = None  # activity: the export activity
    source_rows: int = 0  # activity: export-file rows consumed
    expected: int | None = None  # ContactCount / TransactionCount
    high_water: str | None = None
    done: bool = False  # every row written (the rename may still be due)


_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS export_checkpoint (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    value   BLOB NOT NULL,          -- a msgspec-JSON Checkpoint
    saved   REAL NOT NULL
)
"""


class Checkpoints:
    """The export's own table in the run's journal file (one row, replaced atomically)."""

    def __init__(self, run_dir: Path) -> None:
        self._db = sqlite3.connect(run_dir / JOURNAL_NAME, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_CHECKPOINT_SCHEMA)

    def load(self) -> Checkpoint | None:
        row = self._db.execute("SELECT value FROM export_checkpoint WHERE id = 1").fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=Checkpoint)

    def save(self, checkpoint: Checkpoint) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO export_checkpoint (id, value, saved) VALUES (1, ?, ?)",
            (_ENCODER.encode(checkpoint), time.time()),
        )

    def close(self) -> None:
        self._db.close()


class Output:
    """The temporary file behind the target: appended to, checkpointed, renamed at the end."""

    def __init__(self, target: Path, temp: Path, *, offset: int | None) -> None:
        self.target = target
        self.temp = temp
        temp.parent.mkdir(parents=True, exist_ok=True)
        raw: BinaryIO
        if offset is None:
            # Contact data: 0600 (less with a stricter umask); the rename keeps the mode.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            raw = os.fdopen(fd, "wb")  # closed by close()/commit()
        else:
            if not temp.exists():
                raise ConfigError(f"the partial output {temp} is gone; start the export again")
            raw = open(temp, "r+b")  # noqa: SIM115
            raw.truncate(offset)
            raw.seek(offset)
        self._file: BinaryIO | None = raw
        self.size = offset or 0

    @classmethod
    def renamed(cls, target: Path, temp: Path, size: int) -> Output:
        """The output of a run that crashed after its rename: complete, nothing to write."""
        output = cls.__new__(cls)
        output.target, output.temp, output.size = target, temp, size
        output._file = None
        return output

    def write(self, data: bytes) -> None:
        if data:
            assert self._file is not None
            self._file.write(data)
            self.size += len(data)

    def sync(self) -> int:
        """Flush to the disk; the bytes written so far survive any crash."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return self.size

    def flush(self) -> None:
        """Hand what is buffered to the OS (it survives the process, not a power cut)."""
        if self._file is not None:
            self._file.flush()

    def commit(self) -> None:
        """fsync, close, and rename over the target (then fsync the directory)."""
        if self._file is None:
            return  # renamed before
        self.sync()
        self._file.close()
        self._file = None
        os.replace(self.temp, self.target)
        with contextlib.suppress(OSError):
            fd = os.open(self.target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def temp_path(target: Path, run_dir: Path) -> Path:
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:10]
    return target.parent / f".{target.name}.{tag}.part"


def crash_point_after_rows(rows: int, output: Output) -> None:
    """Test hook: ``BULKOPS_TEST_KILL_AFTER_ROWS=N`` SIGKILLs this process once ``N`` rows
    are written, with the rows since the last checkpoint flushed to the file — the state a
    crash between two checkpoints leaves. Unset (always, outside tests), it does nothing."""
    target = os.environ.get("BULKOPS_TEST_KILL_AFTER_ROWS")
    if target and rows >= int(target):
        output.flush()
        os.kill(os.getpid(), signal.SIGKILL)
