"""Emails repeated across chunks: which sent rows a row of a later activity replaced.

The stream dedupes inside a chunk; across chunks it only orders them (a repeated email
makes the later chunk wait), so the rows replaced that way would still be counted as
applied. They are found exactly, with an index on disk, in two ways:

* :class:`ChunkEmailLog` (the usual way) is handed each chunk's rows (lower-cased email,
  line) while the input is planned, the one time it is read, and keeps them in a SQLite
  side table in the run directory: one row per chunk (the emails joined, the lines as an
  array), written in C, plus the candidate emails the stream's email table saw in an
  earlier chunk. :meth:`ChunkEmailLog.mark_repeats` then picks the rows of those candidates
  out of the kept chunks (a set lookup per row, in C) and resolves them with one query.
* :func:`find_repeated_emails` replays the input when no log was kept (a run whose planner
  did not read the whole input in this process).

Memory stays O(1) in the number of rows: one chunk's emails at a time, and the candidates
in batches of :data:`_CANDIDATE_BATCH`.
"""

from __future__ import annotations

import os
import sqlite3
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress
from pathlib import Path

from bulkops.engine.journal import Journal, OutcomeRecord
from bulkops.engine.planner import PlannedChunk, chunk_data, csv_reader, replay
from bulkops.engine.rundirs import FILE_MODE
from bulkops.stream.options import ChunkLimits, ReadOptions

__all__ = ["ChunkEmailLog", "find_repeated_emails"]

_FILE = "emails.tmp"
#: Candidate emails held in memory at once while the kept chunks are scanned.
_CANDIDATE_BATCH = 200_000
#: Outcomes written to the journal at once.
_OUTCOME_BATCH = 10_000


class ChunkEmailLog:
    """Every planned chunk's emails and lines, and the candidate repeats, on disk.

    Pass it to :class:`~bulkops.engine.planner.Planner` as ``emails``; when the input has
    been read to its end, call :meth:`finish_reading`, then :meth:`mark_repeats`; always
    :meth:`close` (which deletes the file). A new log replaces what an earlier process left.

    Args:
        run_dir: the run directory (the side table lives there, next to the journal).
    """

    def __init__(self, run_dir: Path) -> None:
        self._path = Path(run_dir) / _FILE
        self._db: sqlite3.Connection | None = _private_db(self._path)
        # Scratch data, rebuilt by any new run: no rollback journal, no fsync.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-512")  # KiB: blobs are written once, read once
        self._db.execute(
            "CREATE TABLE chunk_rows (seq INTEGER PRIMARY KEY, emails BLOB NOT NULL,"
            " lines BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE candidate (email BLOB PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("CREATE TABLE sent (email BLOB NOT NULL, line INTEGER NOT NULL)")
        self.complete = False
        """Whether every chunk of the input was handed over (:meth:`finish_reading`)."""

    def __call__(
        self, seq: int, emails: bytes, lines: array[int], repeated: tuple[bytes, ...]
    ) -> None:
        """Keep one planned chunk's rows (``Planner``'s ``emails`` callback): the emails as
        the stream joined them (by LF, which no valid address holds), the lines as a 32-bit
        array.
        """
        db = self._connection()
        if lines:
            packed = lines if lines.typecode == "I" else array("I", lines)
            db.execute(
                "INSERT OR REPLACE INTO chunk_rows (seq, emails, lines) VALUES (?, ?, ?)",
                (seq, emails, packed.tobytes()),
            )
        if repeated:
            db.executemany(
                "INSERT OR IGNORE INTO candidate (email) VALUES (?)", ((e,) for e in repeated)
            )

    def finish_reading(self) -> None:
        """The whole input has been planned: the log holds every chunk."""
        self.complete = True

    def mark_repeats(self, journal: Journal) -> int:
        """Record a ``duplicate`` outcome for every sent row whose email a later chunk sent
        again (replaced by the next occurrence, as :func:`find_repeated_emails` does).

        Returns:
            how many rows it marked.
        """
        db = self._connection()
        db.commit()
        last = b""
        while True:
            batch = db.execute(
                "SELECT email FROM candidate WHERE email > ? ORDER BY email LIMIT ?",
                (last, _CANDIDATE_BATCH),
            ).fetchall()
            if not batch:
                break
            last = batch[-1][0]
            self._pick({email for (email,) in batch})
        db.commit()
        return _mark(journal, db)

    def _pick(self, wanted: set[bytes]) -> None:
        """Copy the rows of the ``wanted`` emails from the kept chunks into ``sent``."""
        db = self._connection()
        seqs = [seq for (seq,) in db.execute("SELECT seq FROM chunk_rows ORDER BY seq")]
        for seq in seqs:  # one chunk in memory at a time
            emails, packed = db.execute(
                "SELECT emails, lines FROM chunk_rows WHERE seq = ?", (seq,)
            ).fetchone()
            keys = emails.split(b"\n")
            lines = array("I")
            lines.frombytes(packed)
            hits = list(compress(zip(keys, lines, strict=True), map(wanted.__contains__, keys)))
            if hits:
                db.executemany("INSERT INTO sent (email, line) VALUES (?, ?)", hits)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the email log is closed")
        return self._db

    def close(self) -> None:
        """Close and delete the side table."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._path.unlink(missing_ok=True)


def _private_db(path: Path) -> sqlite3.Connection:
    """A new, empty SQLite file at ``path``, private like the journal (it holds emails)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return sqlite3.connect(path)


def _mark(journal: Journal, db: sqlite3.Connection) -> int:
    """Mark each occurrence in ``sent`` but the last of its email as replaced by the next."""
    db.execute("CREATE INDEX IF NOT EXISTS sent_email ON sent(email, line)")
    repeats = db.execute(
        "SELECT email, line FROM sent WHERE email IN"
        " (SELECT email FROM sent GROUP BY email HAVING count(*) > 1) ORDER BY email, line"
    )
    marked: list[OutcomeRecord] = []
    total = 0
    previous: tuple[object, int] | None = None
    for email_key, line in repeats:
        if previous is not None and previous[0] == email_key:
            marked.append(
                OutcomeRecord(
                    line=previous[1],
                    kind="duplicate",
                    reason=f"replaced by line {line} (same email, applied in a later activity)",
                    replaced_by=line,
                )
            )
            if len(marked) >= _OUTCOME_BATCH:
                journal.add_outcomes(marked)
                total += len(marked)
                marked = []
        previous = (email_key, line)
    journal.add_outcomes(marked)
    return total + len(marked)


def _chunk_emails(chunk: PlannedChunk) -> Iterator[str]:
    """The lower-cased email of each row of a chunk's ``data``, one row at a time."""
    reader = csv_reader(chunk_data(chunk.body, chunk.content_type).decode("utf-8"))
    header = next(reader, [])
    at = header.index("EMAIL ADDRESS") if "EMAIL ADDRESS" in header else 0
    for row in reader:
        yield row[at].strip().lower() if at < len(row) else ""


def find_repeated_emails(
    journal: Journal,
    source: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    *,
    lists: Sequence[str],
    kind: str,
    chunks: set[int] | None = None,
) -> int:
    """Record a ``duplicate`` outcome for every sent row whose email a later chunk sent again.

    The slow way, for a run without a complete :class:`ChunkEmailLog`: it replays the
    input, indexes every sent row's email in a temporary SQLite table next to the journal,
    and marks each occurrence but the last as replaced by the next one. Only run when some
    chunk depended on another. Only the rows of ``chunks`` (those on either side of a
    dependency; default all) are indexed, and only their email column is kept.

    Returns:
        how many rows it marked.
    """
    path = journal.run_dir / _FILE
    db = _private_db(path)
    try:
        db.execute("CREATE TABLE sent (email TEXT NOT NULL, line INTEGER NOT NULL)")
        with db:
            for event in replay(source, read, limits, lists=lists, kind=kind):
                if not isinstance(event, PlannedChunk):
                    continue
                if chunks is not None and event.record.seq not in chunks:
                    continue
                db.executemany(
                    "INSERT INTO sent (email, line) VALUES (?, ?)",
                    _pairs(_chunk_emails(event), event.record.lines),
                )
        return _mark(journal, db)
    finally:
        db.close()
        path.unlink(missing_ok=True)


def _pairs(emails: Iterable[str], lines: Iterable[int]) -> Iterator[tuple[str, int]]:
    return zip(emails, lines, strict=True)
