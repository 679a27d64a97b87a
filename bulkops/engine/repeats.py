"""Emails repeated across chunks: which sent rows a row of a later activity replaced.

The stream dedupes inside a chunk; across chunks it only orders them (a repeated email
makes the later chunk wait), so after a run the rows replaced that way are still counted
as applied. :func:`find_repeated_emails` finds them exactly, in a replay of the input,
with an index on disk: memory stays O(1) in the number of rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from bulkops.engine.journal import Journal, OutcomeRecord
from bulkops.engine.planner import PlannedChunk, chunk_data, csv_reader, replay
from bulkops.stream.options import ChunkLimits, ReadOptions

__all__ = ["find_repeated_emails"]


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

    The stream dedupes inside a chunk; across chunks it only orders them (a repeated email
    makes the later chunk wait). This pass finds those repeats exactly: it replays the
    input, indexes every sent row's email in a temporary SQLite table next to the journal,
    and marks each occurrence but the last as replaced by the next one. Only run when some
    chunk depended on another. Only the rows of ``chunks`` (those on either side of a
    dependency; default all) are indexed, and only their email column is kept.

    Returns:
        how many rows it marked.
    """
    db = sqlite3.connect(journal.run_dir / "emails.tmp")
    try:
        db.execute("DROP TABLE IF EXISTS sent")
        db.execute("CREATE TABLE sent (email TEXT NOT NULL, line INTEGER NOT NULL)")
        with db:
            for event in replay(source, read, limits, lists=lists, kind=kind):
                if not isinstance(event, PlannedChunk):
                    continue
                if chunks is not None and event.record.seq not in chunks:
                    continue
                db.executemany(
                    "INSERT INTO sent (email, line) VALUES (?, ?)",
                    zip(_chunk_emails(event), event.record.lines, strict=True),
                )
        db.execute("CREATE INDEX sent_email ON sent(email, line)")
        repeats = db.execute(
            "SELECT email, line FROM sent WHERE email IN"
            " (SELECT email FROM sent GROUP BY email HAVING count(*) > 1) ORDER BY email, line"
        )
        marked: list[OutcomeRecord] = []
        previous: tuple[str, int] | None = None
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
            previous = (email_key, line)
        journal.add_outcomes(marked)
        return len(marked)
    finally:
        db.close()
        (journal.run_dir / "emails.tmp").unlink(missing_ok=True)
