"""The run journal: a SQLite file in the run directory that makes every run resumable.

What is written, and when (each step is its own committed transaction, in this order):

1. ``open``: the run's parameters — command, input path, size, a digest of its first MiB,
   options, resolved lists — so ``resume`` can redo exactly the same run and refuse a
   changed input.
2. ``plan``: every chunk as the stream produces it — sequence, kind, rows, source lines,
   byte range, body digest, dependency. On resume the same input re-derives the same
   chunks; a digest that differs means the input changed.
3. chunk events (:mod:`bulkops.engine.chunks`): ``SEND`` just before a chunk's POST, with
   the wall-clock time; ``ANSWER`` with the activity id right after the answer; ``LOSE``
   when the answer is lost (or a run finds a chunk a dead process left in ``posting``),
   then ``ADOPT``/``ABSENT``/``AMBIGUOUS`` from reconciling it against the activities
   feed. :meth:`Journal.apply` reads the state and writes the next one in one transaction
   and refuses a pair the table lacks; ``maybe_twice`` is set in that same transaction.
   Every lost POST is remembered (``lost_post``) until an ``ADOPT`` matches it: it may
   create its activity later, and no other chunk may adopt that one.
4. ``FINISH`` (:meth:`Journal.done`): the activity's final status, counts, server run
   times, and the row errors as ``failed`` outcomes — in one transaction, so outcomes are
   never half recorded.

Local outcomes (``rejected``, ``duplicate``) are recorded as the stream reports them; they
are keyed by line, so replaying the stream on resume rewrites the same rows.

Connections use WAL with ``synchronous=NORMAL``: a SIGKILL loses nothing committed. The
file carries a format version (``PRAGMA user_version``); a journal of another version is
refused with a message saying so.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from bulkops.engine.chunks import (
    FLAGS_TWICE,
    NAMES_ACTIVITY,
    ChunkEvent,
    ChunkState,
    Reconciled,
    next_chunk_state,
)
from bulkops.errors import ConfigError, StateError

__all__ = [
    "JOURNAL_NAME",
    "JOURNAL_VERSION",
    "ChunkRecord",
    "ChunkState",
    "Journal",
    "OutcomeRecord",
]

JOURNAL_NAME = "journal.sqlite"
#: The journal's format. 2: chunk events and states of engine/chunks.py, options as
#: msgspec-encoded records, blocked activities. Version 1 files had no version (0).
JOURNAL_VERSION = 2

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
    state           TEXT NOT NULL,          -- a ChunkState value
    activity_id     TEXT,
    posts           INTEGER NOT NULL DEFAULT 0,
    maybe_twice     INTEGER NOT NULL DEFAULT 0,
    suspected       INTEGER NOT NULL DEFAULT 0,
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
CREATE TABLE IF NOT EXISTS blocked (   -- activities no chunk may adopt (undecidable matches)
    activity_id     TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS lost_post ( -- POSTs whose answer was lost, not matched to an activity
    seq             INTEGER NOT NULL,
    started         REAL NOT NULL,
    PRIMARY KEY (seq, started)
);
"""

# A later outcome for the same line replaces an earlier one only if it ranks higher:
# a row that a later row superseded is a duplicate, whatever else happened to it.
_RANK = {"failed": 1, "rejected": 2, "duplicate": 3}


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
    state: ChunkState = ChunkState.PLANNED
    activity_id: str | None = None
    posts: int = 0
    maybe_twice: bool = False
    suspected: bool = False
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
        read_only: only read it (``status``, ``runs``): no schema or version is written.

    Raises:
        ConfigError: ``create`` is false and there is no journal there.
    """

    def __init__(self, run_dir: str | Path, *, create: bool, read_only: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JOURNAL_NAME
        if not create and not self.path.exists():
            raise ConfigError(f"{self.run_dir} is not a bulkops run directory (no {JOURNAL_NAME})")
        if read_only:  # status and runs: leave the file (and its mtime, the run's age) alone
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                self._check_version()
            except BaseException:
                self._db.close()
                raise
            return
        if not self.run_dir.is_dir():  # private: the journal holds contact data
            self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            self.run_dir.mkdir(mode=0o700, exist_ok=True)
        if create and not self.path.exists():
            # SQLite gives the -wal and -shm files the mode of the database file.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._check_version()
        except BaseException:
            self._db.close()
            raise
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {JOURNAL_VERSION}")

    def _check_version(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        (tables,) = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables and version != JOURNAL_VERSION:
            raise ConfigError(
                f"{self.run_dir} was written by another version of bulkops (journal format "
                f"{version or 1}, this version reads {JOURNAL_VERSION}): finish it with that "
                "version, or start a new run"
            )

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
                    ChunkState.PLANNED.value,
                ),
            )
        return chunk

    def chunk(self, seq: int) -> ChunkRecord | None:
        """One chunk, or None."""
        row = self._db.execute("SELECT * FROM chunk WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else self._record(row)

    def chunks(self, state: ChunkState | None = None) -> list[ChunkRecord]:
        """All chunks (in one state, when given), in sequence order."""
        if state is None:
            rows = self._db.execute("SELECT * FROM chunk ORDER BY seq")
        else:
            rows = self._db.execute(
                "SELECT * FROM chunk WHERE state = ? ORDER BY seq", (state.value,)
            )
        return [self._record(row) for row in rows]

    def _record(self, row: tuple[Any, ...]) -> ChunkRecord:
        names = [d[0] for d in self._db.execute("SELECT * FROM chunk LIMIT 0").description]
        values = dict(zip(names, row, strict=True))
        values["lines"] = _lines_array(values["lines"])
        values["maybe_twice"] = bool(values["maybe_twice"])
        values["suspected"] = bool(values["suspected"])
        values["state"] = ChunkState(values["state"])
        return ChunkRecord(**values)

    def apply(
        self,
        seq: int,
        event: ChunkEvent,
        *,
        activity_id: str | None = None,
        now: float | None = None,
    ) -> ChunkState:
        """Apply a chunk event (:data:`bulkops.engine.chunks.TRANSITIONS`) in one transaction.

        ``SEND`` records the time (``now``, default the wall clock) and counts the POST;
        ``ANSWER`` and ``ADOPT`` record ``activity_id``; ``ABSENT``/``AMBIGUOUS`` forget
        it; the events of :data:`~bulkops.engine.chunks.FLAGS_TWICE` set ``maybe_twice``,
        ``SUSPECT`` sets ``suspected``.

        Returns:
            the chunk's new state.

        Raises:
            StateError: no such chunk, the transition is not in the table, or an activity
                id is missing or given where none belongs.
        """
        with self._tx():
            return self._apply(seq, event, activity_id=activity_id, now=now)

    def _apply(
        self, seq: int, event: ChunkEvent, *, activity_id: str | None, now: float | None
    ) -> ChunkState:
        if (event in NAMES_ACTIVITY) != (activity_id is not None):
            need = "needs" if activity_id is None else "takes no"
            raise StateError(f"chunk event {event} {need} activity id")
        row = self._db.execute("SELECT state FROM chunk WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise StateError(f"chunk event {event} for chunk {seq}, which is not planned")
        state = next_chunk_state(ChunkState(row[0]), event)
        sets = ["state = ?"]
        values: list[object] = [state.value]
        if event is ChunkEvent.SEND:
            sets += ["post_started = ?", "posts = posts + 1"]
            values.append(now if now is not None else time.time())
        if event in NAMES_ACTIVITY:
            sets.append("activity_id = ?")
            values.append(activity_id)
        elif state is ChunkState.PLANNED:
            sets.append("activity_id = NULL")
        if event in FLAGS_TWICE:
            sets.append("maybe_twice = 1")
        if event is ChunkEvent.SUSPECT:
            sets.append("suspected = 1")
        if event is ChunkEvent.LOSE:  # it may create its activity at any time: remember it
            self._db.execute(
                "INSERT OR IGNORE INTO lost_post (seq, started) SELECT seq, post_started"
                " FROM chunk WHERE seq = ? AND post_started IS NOT NULL",
                (seq,),
            )
        elif event is ChunkEvent.ADOPT:  # matched, if it was the chunk's only lost POST
            self._db.execute(
                "DELETE FROM lost_post WHERE seq = ?"
                " AND (SELECT count(*) FROM lost_post WHERE seq = ?) = 1",
                (seq, seq),
            )
        self._db.execute(f"UPDATE chunk SET {', '.join(sets)} WHERE seq = ?", (*values, seq))
        return state

    def reconciled(self, seq: int, verdict: Reconciled) -> ChunkState:
        """Journal a reconciliation in one transaction: block the undecidable candidates,
        SUSPECT the other unanswered chunks they may belong to, flag ``maybe_twice`` on the
        reconciled ones they may belong to (``verdict.twice``), then the chunk's own event
        (a crash can never leave a candidate blocked while its possible owners are not
        marked).

        Returns:
            the chunk's new state.

        Raises:
            StateError: as :meth:`apply`.
        """
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO blocked (activity_id) VALUES (?)",
                [(activity_id,) for activity_id in sorted(verdict.blocked)],
            )
            for other in sorted(verdict.suspects):
                self._apply(other, ChunkEvent.SUSPECT, activity_id=None, now=None)
            self._db.executemany(
                "UPDATE chunk SET maybe_twice = 1 WHERE seq = ?",
                [(other,) for other in sorted(verdict.twice)],
            )
            return self._apply(seq, verdict.event, activity_id=verdict.activity_id, now=None)

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
        """Record a chunk's final activity status and its failed rows, atomically (the
        ``FINISH`` event: the chunk must be POSTED).

        Raises:
            StateError: the chunk is not POSTED.
        """
        failures = list(failures)
        with self._tx():
            row = self._db.execute("SELECT state FROM chunk WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                raise StateError(f"chunk {seq} finished, but it is not planned")
            state = next_chunk_state(ChunkState(row[0]), ChunkEvent.FINISH)
            self._db.execute(
                "UPDATE chunk SET state = ?, status = ?, transaction_count = ?, error_count = ?,"
                " run_start = ?, run_finish = ?, insert_time = ?, finished = ? WHERE seq = ?",
                (
                    state.value,
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

    def lost_posts(self) -> list[tuple[int, float, int]]:
        """Every POST whose answer was lost and that no reconciliation matched to an
        activity since, as (chunk, sent at, rows): each may still have created one (a server
        finishes a request whose client is gone), so a candidate activity that fits one of
        them cannot be told apart from it."""
        rows = self._db.execute(
            "SELECT l.seq, l.started, c.rows FROM lost_post l JOIN chunk c ON c.seq = l.seq"
            " ORDER BY l.seq, l.started"
        )
        return [(seq, started, n) for seq, started, n in rows]

    def known_activity_ids(self) -> set[str]:
        """Ids of every activity this run created, and of those it must never adopt."""
        rows = self._db.execute(
            "SELECT activity_id FROM chunk WHERE activity_id IS NOT NULL"
            " UNION SELECT activity_id FROM blocked"
        )
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

    def forget_plan(self) -> None:
        """Drop every chunk and outcome, and what was read (the input is cut again).

        Only for a run none of whose chunks was sent with success (the caller checks).
        """
        with self._tx():
            self._db.execute("DELETE FROM chunk")
            self._db.execute("DELETE FROM outcome")
            self._db.execute("DELETE FROM meta WHERE key IN ('rows_read', 'read_complete')")

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
