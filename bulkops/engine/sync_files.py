"""The files of a sync's run directory and the runs of its phases (``add/``, ``remove/``,
read from their journals): what to send (``send.csv``, ``remove.csv``) and the
outcome files (one CSV per outcome but ``unchanged``, ``removed.csv``), written from
``sync.db`` (:mod:`bulkops.engine.sync_diff`), each atomically."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from bulkops.engine.chunks import ChunkState
from bulkops.engine.journal import JOURNAL_NAME, ChunkRecord, Journal
from bulkops.engine.sync_diff import decode_vals
from bulkops.engine.sync_report import SyncCounts
from bulkops.engine.sync_snap import generation_of
from bulkops.errors import ConfigError
from bulkops.wire.activity import ActivityStatus
from bulkops.wire.columns import EMAIL_COLUMN, column_for_field

__all__ = [
    "ADD_DIR",
    "REMOVE_DIR",
    "REMOVE_NAME",
    "SEND_NAME",
    "bytes_sent",
    "check_not_overtaken",
    "failed_add_lines",
    "first_add",
    "own_writes",
    "removal_failures",
    "sub_state",
    "sync_counts",
    "write_outcome_files",
    "write_send_files",
]

_BREAK = re.compile(r"\r\n|\r|\n")

ADD_DIR = "add"
REMOVE_DIR = "remove"
SEND_NAME = "send.csv"
REMOVE_NAME = "remove.csv"


def write_send_files(
    db: sqlite3.Connection, run_dir: Path, columns: Sequence[str]
) -> tuple[int, int]:
    """``send.csv`` (rows to add by activity, with ``send_line``) and ``remove.csv``."""
    header = [EMAIL_COLUMN.name, *(column_for_field(f).name for f in columns)]
    sent = 0
    mapping: list[tuple[str, int, int]] = []
    db.execute("BEGIN")
    physical = 2  # the line the next row starts on (the header is line 1)
    with _atomic(run_dir / SEND_NAME) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        rows = db.execute(
            "SELECT line, email, vals FROM row_outcome WHERE route = 'bulk' ORDER BY line"
        )
        for line, email, vals in rows:
            values = decode_vals(vals)
            writer.writerow([email, *values])
            sent += 1
            mapping.append(("add", physical, line))
            # Lines are physical (the pipeline's): a value may hold CR, LF or CRLF.
            physical += 1 + sum(len(_BREAK.findall(v)) for v in values if "\n" in v or "\r" in v)
            if len(mapping) >= 10_000:
                db.executemany("INSERT OR REPLACE INTO send_line VALUES (?, ?, ?)", mapping)
                mapping = []
    db.executemany("INSERT OR REPLACE INTO send_line VALUES (?, ?, ?)", mapping)
    db.execute("COMMIT")
    removes = 0
    with _atomic(run_dir / REMOVE_NAME) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([EMAIL_COLUMN.name])
        for (email,) in db.execute("SELECT email FROM remove_row ORDER BY email_key"):
            writer.writerow([email])
            removes += 1
    return sent, removes


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    temp = path.with_name(f".{path.name}.part")
    with temp.open("w", newline="", encoding="utf-8") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def sync_counts(db: sqlite3.Connection, *, sent: bool, skipped: int) -> SyncCounts:
    by_kind = dict.fromkeys(
        ("added", "updated", "unchanged", "opted_out", "rejected", "duplicate", "failed"), 0
    )
    for kind, n in db.execute("SELECT kind, count(*) FROM row_outcome GROUP BY kind"):
        by_kind[kind] = n
    by_kind["unchanged"] += skipped
    removes = db.execute("SELECT count(*), count(failed) FROM remove_row").fetchone()
    return SyncCounts(
        read=sum(by_kind.values()),
        removed=int(removes[0] - removes[1]) if sent else 0,
        remove_failed=int(removes[1]),
        **by_kind,
    )


def write_outcome_files(db: sqlite3.Connection, run_dir: Path, *, removed: bool) -> dict[str, str]:
    """One CSV per outcome but ``unchanged`` (``line,email,detail``), and ``removed.csv``."""
    files: dict[str, str] = {}
    for kind in ("added", "updated", "opted_out", "rejected", "duplicate", "failed"):
        path = run_dir / f"{kind}.csv"
        rows = db.execute(
            "SELECT line, coalesce(email, ''), CASE WHEN kind = 'updated' THEN changed"
            " ELSE reason END FROM row_outcome WHERE kind = ? ORDER BY line",
            (kind,),
        )
        with _atomic(path) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["line", "email", "changed" if kind == "updated" else "reason"])
            writer.writerows(rows)
        files[kind] = str(path)
    name = "removed.csv" if removed else "to_remove.csv"
    path = run_dir / name
    with _atomic(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["email", "reason"])
        writer.writerows(
            db.execute("SELECT email, coalesce(failed, '') FROM remove_row ORDER BY email_key")
        )
    files[name.removesuffix(".csv")] = str(path)
    return files


# -- the runs of the phases ------------------------------------------------------------------


def sub_state(directory: Path) -> str | None:
    """The state of the import run in ``directory``: None when it has none."""
    if not (directory / JOURNAL_NAME).is_file():
        return None
    journal = Journal(directory, create=False, read_only=True)
    try:
        return str(journal.meta().get("state") or "")
    finally:
        journal.close()


def first_add(run_dir: Path) -> float | None:
    """When the server created the sync's first add activity (seconds), None without one."""
    directory = run_dir / ADD_DIR
    if not (directory / JOURNAL_NAME).is_file():
        return None
    journal = Journal(directory, create=False, read_only=True)
    try:
        times = [c.insert_time for c in journal.chunks() if c.insert_time is not None]
    finally:
        journal.close()
    return min(times) if times else None


def failed_add_lines(db: sqlite3.Connection, run_dir: Path) -> set[int]:
    """Lines of the file whose add activity row failed (read from the ``add/`` journal)."""
    failed: set[int] = set()
    directory = run_dir / ADD_DIR
    if not (directory / JOURNAL_NAME).is_file():
        return failed
    journal = Journal(directory, create=False, read_only=True)
    try:
        lines: list[tuple[int, str]] = []
        for kind in ("failed", "rejected", "duplicate"):
            lines.extend((o.line, o.reason) for o in journal.outcomes(kind))
    finally:
        journal.close()
    for line, reason in lines:
        row = db.execute(
            "SELECT orig FROM send_line WHERE phase = 'add' AND line = ?", (line,)
        ).fetchone()
        if row is not None:
            failed.add(int(row[0]))
            db.execute(
                "UPDATE row_outcome SET kind = 'failed', reason = ? WHERE line = ?",
                (reason, int(row[0])),
            )
    return failed


def removal_failures(db: sqlite3.Connection, run_dir: Path) -> None:
    """Mark the members the remove activities failed to remove (``remove_row.failed``)."""
    directory = run_dir / REMOVE_DIR
    if not (directory / JOURNAL_NAME).is_file():
        return
    journal = Journal(directory, create=False, read_only=True)
    try:
        failures = [(o.line, o.reason) for o in journal.outcomes("failed")]
    finally:
        journal.close()
    # remove.csv is sorted by email_key: line n+1 is the n-th key.
    keys = {}
    if failures:
        wanted = {line for line, _reason in failures}
        for n, (key,) in enumerate(
            db.execute("SELECT email_key FROM remove_row ORDER BY email_key"), start=2
        ):
            if n in wanted:
                keys[n] = key
    db.executemany(
        "UPDATE remove_row SET failed = ? WHERE email_key = ?",
        [(reason, keys[line]) for line, reason in failures if line in keys],
    )


def _sent_chunks(run_dir: Path) -> Iterator[tuple[str, ChunkRecord]]:
    """``(phase directory name, chunk)`` of every chunk in the ``add/`` and ``remove/`` runs
    (their journals read only; a phase not begun has none)."""
    for name in (ADD_DIR, REMOVE_DIR):
        directory = run_dir / name
        if not (directory / JOURNAL_NAME).is_file():
            continue
        journal = Journal(directory, create=False, read_only=True)
        try:
            chunks = journal.chunks()
        finally:
            journal.close()
        for chunk in chunks:
            yield name, chunk


def own_writes(db: sqlite3.Connection, run_dir: Path) -> int | None:
    """The write transactions this sync committed on the server, in all its processes:
    completed activities of ``add/`` and ``remove/`` and answered PUTs. None when that is
    not known exactly (a chunk that may have been applied twice, or whose fate is open)."""
    total = 0
    for _name, chunk in _sent_chunks(run_dir):
        if chunk.maybe_twice or chunk.suspected:
            return None
        if chunk.state is ChunkState.DONE:
            total += chunk.status == ActivityStatus.COMPLETE
        elif chunk.state is not ChunkState.PLANNED or chunk.posts:
            return None
    (puts,) = db.execute(
        "SELECT count(*) FROM row_outcome WHERE done > 0 AND kind != 'failed'"
    ).fetchone()
    return total + int(puts)


def bytes_sent(db: sqlite3.Connection, run_dir: Path) -> tuple[int, int, int]:
    """``(bytes, rows in add activities, emails in remove activities)`` of the POSTs made."""
    total = rows = removes = 0
    for name, chunk in _sent_chunks(run_dir):
        total += chunk.body_bytes * chunk.posts
        if chunk.posts:
            if name == ADD_DIR:
                rows += chunk.rows
            else:
                removes += chunk.rows
    put_bytes = db.execute("SELECT coalesce(sum(done), 0) FROM row_outcome").fetchone()[0]
    return total + int(put_bytes), rows, removes


def check_not_overtaken(meta: dict[str, Any], snapshot: Path, run_dir: Path, name: str) -> None:
    """Refuse to resume sending a plan that a newer sync of the list has overtaken.

    The plan was the difference between the file and the list as it was then; once another
    sync has changed the list (its ``snapshot`` has another generation than the one the
    plan was made against), sending the rest of this plan would make the list equal
    neither file.

    Raises:
        ConfigError: the list's snapshot moved on since this sync was planned.
    """
    if meta.get("phase") != "sending" or meta.get("sent") or "planned_generation" not in meta:
        return
    if generation_of(snapshot) != meta["planned_generation"]:
        raise ConfigError(
            f"another sync of the list {name!r} finished after the one in {run_dir} was "
            "planned: sending the rest of this older plan would undo it. Start a new sync "
            "instead (it sends only what still differs)"
        )
