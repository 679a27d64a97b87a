"""The ledger: every input row ends in exactly one outcome, and the report says so.

Outcomes:

* ``applied`` — sent in an activity that completed, and not reported as a row error;
* ``failed`` — a row error from the server (``Errors``), mapped back to its source line, or
  every row of an activity that ended in ERROR;
* ``rejected`` — refused locally (bad email, field too long, ragged row, …);
* ``duplicate`` — a later row with the same email replaced it (the later row wins).

``applied`` is never stored row by row: chunk ``k`` applied ``rows_k - failed_k - dup_k``
rows, where ``dup_k`` counts duplicates whose line was sent in chunk ``k`` (a row can be
sent and then superseded by a later chunk). Lines of a chunk are increasing and chunks
cover disjoint, increasing line ranges, so membership is two binary searches.

The report checks ``read == applied + failed + rejected + duplicate`` (``pending`` rows,
in activities not yet finished, appear only in interrupted runs).
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import io
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bulkops.engine.chunks import ChunkState
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord

__all__ = [
    "ActivitySummary",
    "ImportReport",
    "OutcomeCounts",
    "all_done",
    "count_outcomes",
    "write_atomically",
    "write_outcome_file",
]


class OutcomeCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many input rows ended in each outcome."""

    read: int
    applied: int
    failed: int
    rejected: int
    duplicate: int
    pending: int = 0

    @property
    def balanced(self) -> bool:
        """``read == applied + failed + rejected + duplicate + pending``."""
        total = self.applied + self.failed + self.rejected + self.duplicate + self.pending
        return self.read == total


class ActivitySummary(msgspec.Struct, frozen=True, kw_only=True):
    """One activity of the run, as the report lists it."""

    chunk: int
    activity_id: str | None
    status: str | None
    rows: int
    first_line: int
    last_line: int
    transaction_count: int | None
    errors: int | None
    posts: int
    maybe_twice: bool
    insert_time: float | None
    run_start: float | None
    run_finish: float | None


class ImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """The result of an import, remove or clear run (written as ``report.json``)."""

    command: str
    state: str  # complete | interrupted | stalled | failed
    input: str | None
    run_dir: str
    lists: list[str]
    counts: OutcomeCounts
    activities: list[ActivitySummary]
    chunks_sent_twice: list[int]
    requests: int
    retries: int
    throttled: int
    wall_seconds: float
    rows_per_second: float
    server_busy_seconds: float
    peak_rss_bytes: int
    files: dict[str, str]
    message: str = ""
    #: ``clear`` only: the memberships its activity removed (its ``TransactionCount``).
    members_removed: int | None = None
    #: The text encoding the input was read in (``stream/encoding.py`` decides it from the
    #: first MiB unless ``--encoding`` names it); None without an input (``clear``).
    encoding: str | None = None

    @property
    def exit_code(self) -> int:
        """0 all applied, 2 some rows not applied, 3 stalled or interrupted."""
        if self.state in ("interrupted", "stalled"):
            return 3
        if self.state == "failed":
            return 4
        counts = self.counts
        return 0 if counts.failed + counts.rejected + counts.duplicate == 0 else 2


def _chunk_index(chunks: Sequence[ChunkRecord]) -> tuple[list[int], list[ChunkRecord]]:
    ordered = sorted(chunks, key=lambda c: c.first_line)
    return [c.first_line for c in ordered], ordered


def _sent_in(firsts: list[int], ordered: list[ChunkRecord], line: int) -> ChunkRecord | None:
    at = bisect.bisect_right(firsts, line) - 1
    if at < 0:
        return None
    chunk = ordered[at]
    if line > chunk.last_line:
        return None
    lines: array[int] = chunk.lines
    found = bisect.bisect_left(lines, line)
    return chunk if found < len(lines) and lines[found] == line else None


def count_outcomes(journal: Journal, rows_read: int) -> OutcomeCounts:
    """Count every outcome from the journal (see the module docstring for the rule)."""
    chunks = journal.chunks()
    firsts, ordered = _chunk_index(chunks)
    counts = journal.outcome_counts()
    # Rows of each chunk that ended as something other than applied.
    not_applied: dict[int, int] = {}
    for kind in ("failed", "duplicate"):
        for outcome in journal.outcomes(kind):
            chunk = _sent_in(firsts, ordered, outcome.line)
            if chunk is not None:
                not_applied[chunk.seq] = not_applied.get(chunk.seq, 0) + 1
    applied = pending = 0
    for chunk in chunks:
        if chunk.state == ChunkState.DONE:
            if chunk.status == "COMPLETE":
                applied += chunk.rows - not_applied.get(chunk.seq, 0)
        elif chunk.kind != "clear":
            # Not finished: rows not otherwise accounted for are still pending.
            pending += chunk.rows - not_applied.get(chunk.seq, 0)
    # Rows neither in a chunk nor given an outcome yet (reading was interrupted) are pending.
    accounted = applied + pending + counts["failed"] + counts["rejected"] + counts["duplicate"]
    pending += max(0, rows_read - accounted)
    return OutcomeCounts(
        # A process killed before it stored how far it read: its rows in chunks and
        # outcomes were read all the same.
        read=max(rows_read, accounted),
        applied=applied,
        failed=counts["failed"],
        rejected=counts["rejected"],
        duplicate=counts["duplicate"],
        pending=pending,
    )


def all_done(journal: Journal) -> bool:
    """Every row of the input read, and every chunk finished: nothing left to do."""
    if not journal.meta().get("read_complete"):
        return False
    return all(chunk.state == ChunkState.DONE for chunk in journal.chunks())


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write a file through a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_outcome_file(
    path: Path,
    outcomes: Iterable[OutcomeRecord],
    *,
    header: Sequence[str],
    original: Iterator[list[str]] | None = None,
    record_fields: Any = None,
) -> int:
    """Write ``failed.csv``/``rejected.csv``/``duplicates.csv``: line, reason, the original row.

    Args:
        path: the file to write (atomically).
        outcomes: the outcomes, in line order.
        header: the input's header fields (the original row's columns).
        original: unused (kept for symmetry with :func:`record_fields`).
        record_fields: ``callable(outcome) -> list[str]`` giving the original row's fields.

    Returns:
        the number of rows written.
    """
    written = 0

    def rows() -> Iterator[bytes]:
        nonlocal written
        # One writer for the file, its text handed on every ~64 KiB (a writer per row
        # cost more than the row).
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["line", "reason", "field", "replaced_by_line", *header])
        for outcome in outcomes:
            fields = record_fields(outcome) if record_fields is not None else []
            writer.writerow(
                [
                    outcome.line,
                    outcome.reason,
                    outcome.field or "",
                    "" if outcome.replaced_by is None else outcome.replaced_by,
                    *fields,
                ]
            )
            written += 1
            if buffer.tell() >= 1 << 16:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")

    write_atomically(path, rows())
    return written
