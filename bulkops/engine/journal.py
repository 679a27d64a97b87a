"""The run journal: a SQLite file in the run directory that makes every run resumable.

What is written, and when (each step is its own committed transaction, in this order):

1. ``open``: the run's parameters — command, input path, size, a digest of its first MiB,
   options, resolved lists — so ``resume`` can redo exactly the same run and refuse a
   changed input.
2. ``plan``: every chunk as the stream produces it — sequence, kind, rows, source lines,
   byte range, body digest, dependency. On resume the same input re-derives the same
   chunks; a digest that differs means the input changed.
3. ``posting``: just before a chunk's POST, with the wall-clock time. A chunk found in this
   state after a crash has an *unknown* outcome: it is reconciled against the activities
   feed before it is sent again.
4. ``posted``: the activity id, right after the answer.
5. ``done``: the activity's final status, counts, server run times, and the row errors as
   ``failed`` outcomes — in one transaction, so outcomes are never half recorded.

Local outcomes (``rejected``, ``duplicate``) are recorded as the stream reports them; they
are keyed by line, so replaying the stream on resume rewrites the same rows.

Connections use WAL with ``synchronous=NORMAL``: a SIGKILL loses nothing committed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from bulkops.errors import ConfigError

__all__ = [
    "ChunkRecord",
    "ChunkState",
    "Journal",
    "OutcomeRecord",
]

JOURNAL_NAME = "journal.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk (
    seq             INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    rows            INTEGER NOT NULL,
    first_line      INTEGER NOT NULL,
    last_line       INTEGER NOT NULL,
    start_offset    INTEGER NOT NULL,
    end_offset      INTEGER NOT NULL,
    digest          TEXT NOT NULL,
    body_bytes      INTEGER NOT NULL,
    lines           BLOB NOT NULL,          -- array('Q') of source lines, native order
    after           INTEGER,                -- a chunk that must be applied first
    state           TEXT NOT NULL,          -- planned | posting | posted | done
    activity_id     TEXT,
    posts           INTEGER NOT NULL DEFAULT 0,
    maybe_twice     INTEGER NOT NULL DEFAULT 0,
    post_started    REAL,
    status          TEXT,
    transaction_count INTEGER,
    error_count     INTEGER,
    run_start       REAL,
    run_finish      REAL,
    insert_time     REAL,
    finished        REAL
);
CREATE INDEX IF NOT EXISTS chunk_state ON chunk(state, seq);
CREATE TABLE IF NOT EXISTS outcome (
    line            INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,          -- failed | rejected | duplicate
    start_offset    INTEGER,
    end_offset      INTEGER,
    field           TEXT,
    reason          TEXT NOT NULL,
    replaced_by     INTEGER,
    chunk           INTEGER
);
CREATE INDEX IF NOT EXISTS outcome_kind ON outcome(kind, line);
"""

# A later outcome for the same line replaces an earlier one only if it ranks higher:
# a row that a later row superseded is a duplicate, whatever else happened to it.
_RANK = {"failed": 1, "rejected": 2, "duplicate": 3}


class ChunkState:
    """States of a chunk in the journal."""

    PLANNED = "planned"
    POSTING = "posting"
    POSTED = "posted"
    DONE = "done"


@attrs.frozen(kw_only=True)
class ChunkRecord:
    """A chunk as the journal knows it."""

    seq: int
    kind: str
    rows: int
    first_line: int
    last_line: int
    start_offset: int
    end_offset: int
    digest: str
    body_bytes: int
    lines: array[int]
    after: int | None
    state: str
    activity_id: str | None = None
    posts: int = 0
    maybe_twice: bool = False
    post_started: float | None = None
    status: str | None = None
    transaction_count: int | None = None
    error_count: int | None = None
    run_start: float | None = None
    run_finish: float | None = None
    insert_time: float | None = None
    finished: float | None = None


@attrs.frozen(kw_only=True)
class OutcomeRecord:
    """A row that was not applied: failed (server), rejected (local) or duplicate."""

    line: int
    kind: str
    reason: str
    start_offset: int | None = None
    end_offset: int | None = None
    field: str | None = None
    replaced_by: int | None = None
    chunk: int | None = None


def _lines_blob(lines: Sequence[int]) -> bytes:
    return array("Q", lines).tobytes()


def _lines_array(blob: bytes) -> array[int]:
    lines = array("Q")
    lines.frombytes(blob)
    return lines


class Journal:
    """The journal of one run directory.

    Args:
        run_dir: the run directory; the journal file is ``journal.sqlite`` inside it.
        create: create the file (a new run) rather than require it (resume, status).

    Raises:
        ConfigError: ``create`` is false and there is no journal there.
    """

    def __init__(self, run_dir: str | Path, *, create: bool) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JOURNAL_NAME
        if not create and not self.path.exists():
            raise ConfigError(f"{self.run_dir} is not a bulkops run directory (no {JOURNAL_NAME})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    # -- meta ------------------------------------------------------------------------------

    def set_meta(self, **values: Any) -> None:
        """Store run parameters (JSON-encoded)."""
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        """Every stored run parameter."""
        return {key: json.loads(value) for key, value in self._db.execute("SELECT * FROM meta")}

    # -- chunks ----------------------------------------------------------------------------

    def plan(self, chunk: ChunkRecord) -> ChunkRecord:
        """Record a chunk of the plan; if it is already recorded, return the recorded one.

        Raises:
            ConfigError: a chunk with this number exists with another digest: the input or
                the options changed since the run began.
        """
        existing = self.chunk(chunk.seq)
        if existing is not None:
            if existing.digest != chunk.digest:
                raise ConfigError(
                    f"chunk {chunk.seq} differs from the one planned before (lines "
                    f"{existing.first_line}-{existing.last_line}): the input file changed"
                )
            return existing
        with self._tx():
            self._db.execute(
                "INSERT INTO chunk (seq, kind, rows, first_line, last_line, start_offset,"
                " end_offset, digest, body_bytes, lines, after, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chunk.seq,
                    chunk.kind,
                    chunk.rows,
                    chunk.first_line,
                    chunk.last_line,
                    chunk.start_offset,
                    chunk.end_offset,
                    chunk.digest,
                    chunk.body_bytes,
                    _lines_blob(chunk.lines),
                    chunk.after,
                    ChunkState.PLANNED,
                ),
            )
        return chunk

    def chunk(self, seq: int) -> ChunkRecord | None:
        """One chunk, or None."""
        row = self._db.execute("SELECT * FROM chunk WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else self._record(row)

    def chunks(self, state: str | None = None) -> list[ChunkRecord]:
        """All chunks (in one state, when given), in sequence order."""
        if state is None:
            rows = self._db.execute("SELECT * FROM chunk ORDER BY seq")
        else:
            rows = self._db.execute("SELECT * FROM chunk WHERE state = ? ORDER BY seq", (state,))
        return [self._record(row) for row in rows]

    def _record(self, row: tuple[Any, ...]) -> ChunkRecord:
        names = [d[0] for d in self._db.execute("SELECT * FROM chunk LIMIT 0").description]
        values = dict(zip(names, row, strict=True))
        values["lines"] = _lines_array(values["lines"])
        values["maybe_twice"] = bool(values["maybe_twice"])
        return ChunkRecord(**values)

    def posting(self, seq: int, *, now: float | None = None) -> None:
        """Mark a chunk as about to be POSTed (its outcome is unknown until :meth:`posted`)."""
        with self._tx():
            self._db.execute(
                "UPDATE chunk SET state = ?, post_started = ?, posts = posts + 1 WHERE seq = ?",
                (ChunkState.POSTING, now if now is not None else time.time(), seq),
            )

    def posted(self, seq: int, activity_id: str, *, maybe_twice: bool = False) -> None:
        """Record the activity a chunk's POST created."""
        with self._tx():
            self._db.execute(
                "UPDATE chunk SET state = ?, activity_id = ?,"
                " maybe_twice = maybe_twice OR ? WHERE seq = ?",
                (ChunkState.POSTED, activity_id, int(maybe_twice), seq),
            )

    def unposted(self, seq: int) -> None:
        """Reconciliation found the chunk was never applied: it is to be sent again."""
        with self._tx():
            self._db.execute(
                "UPDATE chunk SET state = ?, activity_id = NULL WHERE seq = ?",
                (ChunkState.PLANNED, seq),
            )

    def done(
        self,
        seq: int,
        *,
        status: str,
        transaction_count: int,
        failures: Iterable[OutcomeRecord],
        run_start: float | None,
        run_finish: float | None,
        insert_time: float | None,
    ) -> None:
        """Record a chunk's final activity status and its failed rows, atomically."""
        failures = list(failures)
        with self._tx():
            self._db.execute(
                "UPDATE chunk SET state = ?, status = ?, transaction_count = ?, error_count = ?,"
                " run_start = ?, run_finish = ?, insert_time = ?, finished = ? WHERE seq = ?",
                (
                    ChunkState.DONE,
                    status,
                    transaction_count,
                    len(failures),
                    run_start,
                    run_finish,
                    insert_time,
                    time.time(),
                    seq,
                ),
            )
            self._insert_outcomes(failures)

    def known_activity_ids(self) -> set[str]:
        """Ids of every activity this run created."""
        rows = self._db.execute("SELECT activity_id FROM chunk WHERE activity_id IS NOT NULL")
        return {row[0] for row in rows}

    # -- outcomes --------------------------------------------------------------------------

    def add_outcomes(self, outcomes: Iterable[OutcomeRecord]) -> None:
        """Record local outcomes (rejected, duplicate) in one transaction."""
        with self._tx():
            self._insert_outcomes(outcomes)

    def _insert_outcomes(self, outcomes: Iterable[OutcomeRecord]) -> None:
        for outcome in outcomes:
            row = self._db.execute(
                "SELECT kind FROM outcome WHERE line = ?", (outcome.line,)
            ).fetchone()
            if row is not None and _RANK[row[0]] > _RANK[outcome.kind]:
                continue
            self._db.execute(
                "INSERT OR REPLACE INTO outcome (line, kind, start_offset, end_offset, field,"
                " reason, replaced_by, chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    outcome.line,
                    outcome.kind,
                    outcome.start_offset,
                    outcome.end_offset,
                    outcome.field,
                    outcome.reason,
                    outcome.replaced_by,
                    outcome.chunk,
                ),
            )

    def outcomes(self, kind: str) -> Iterator[OutcomeRecord]:
        """Outcomes of one kind, in line order."""
        rows = self._db.execute(
            "SELECT line, kind, start_offset, end_offset, field, reason, replaced_by, chunk"
            " FROM outcome WHERE kind = ? ORDER BY line",
            (kind,),
        )
        for line, k, start, end, field, reason, replaced_by, chunk in rows:
            yield OutcomeRecord(
                line=line,
                kind=k,
                start_offset=start,
                end_offset=end,
                field=field,
                reason=reason,
                replaced_by=replaced_by,
                chunk=chunk,
            )

    def outcome_counts(self) -> dict[str, int]:
        """How many rows have each non-applied outcome."""
        counts = {"failed": 0, "rejected": 0, "duplicate": 0}
        for kind, count in self._db.execute("SELECT kind, count(*) FROM outcome GROUP BY kind"):
            counts[kind] = count
        return counts

    def outcome_lines(self, lines: Sequence[int]) -> dict[int, str]:
        """The recorded outcome kind of each of ``lines`` that has one."""
        found: dict[int, str] = {}
        for start in range(0, len(lines), 500):
            part = list(lines[start : start + 500])
            marks = ",".join("?" * len(part))
            for line, kind in self._db.execute(
                f"SELECT line, kind FROM outcome WHERE line IN ({marks})", part
            ):
                found[line] = kind
        return found


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
