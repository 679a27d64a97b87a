"""What a run directory holds, read offline: for ``bulkops status`` and ``bulkops runs``.

A run's state as shown is the journal's, corrected by what the journal cannot know:

* ``running`` in the journal while no process holds the run's lock (``rundirs.RunLock``)
  means the process died (SIGKILL, a second Ctrl-C, a crash): **interrupted**;
* a run that failed before anything was sent is **not-started**, with its error.

Counts are the report's when ``report.json`` was written by the run's last process (same
state), so ``status`` and ``report.json`` never disagree; otherwise they are counted from
the journal by the same function that makes the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.engine.ledger import ImportReport, OutcomeCounts, count_outcomes
from bulkops.engine.report import read_report
from bulkops.engine.rundirs import NOT_STARTED, command_name, is_running

__all__ = ["RunInfo", "describe_run", "find_runs"]


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run directory, described."""

    run_dir: str
    command: str
    #: complete | interrupted | stalled | running | not-started | dry-run | unknown
    state: str
    input: str | None
    lists: list[str]
    counts: OutcomeCounts | None
    chunks: dict[str, int]
    read_complete: bool
    #: seconds since the journal was last written
    age_seconds: float
    error: str | None = None
    exit_code: int = 0
    message: str = ""


def _lists_of(meta: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for item in meta.get("lists") or []:
        if isinstance(item, dict):
            found.append(str(item.get("name") or item.get("uri") or "?"))
    return found


def _exit_code(state: str, meta: dict[str, Any], counts: OutcomeCounts | None) -> int:
    if state == NOT_STARTED:
        return int(meta.get("exit_code") or 4)
    if state in ("interrupted", "stalled", "running"):
        return 3
    if state == "failed":
        return 4
    if counts is None:
        return 0
    return 0 if counts.failed + counts.rejected + counts.duplicate == 0 else 2


def _age(directory: Path) -> float:
    newest = 0.0
    for name in (JOURNAL_NAME, "report.json"):
        try:
            newest = max(newest, (directory / name).stat().st_mtime)
        except OSError:
            continue
    return max(0.0, time.time() - newest) if newest else 0.0


def describe_run(run_dir: str | Path) -> RunInfo:
    """Describe the run in ``run_dir`` (offline, read-only as far as the run goes).

    Raises:
        ConfigError: not a run directory, or a journal of another format.
    """
    directory = Path(run_dir)
    age = _age(directory)
    journal = Journal(directory, create=False, read_only=True)
    try:
        meta = journal.meta()
        chunks: dict[str, int] = {}
        for chunk in journal.chunks():
            chunks[chunk.state.value] = chunks.get(chunk.state.value, 0) + 1
        stored = meta.get("state")
        state = str(stored) if stored else ("dry-run" if "input" in meta else "unknown")
        if state == "running" and not is_running(directory):
            state = "interrupted"
        report: ImportReport | None = None
        if meta.get("command") not in ("export", "sync"):
            try:
                report = read_report(directory)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                report = None
        counts: OutcomeCounts | None
        # Exports and syncs keep their counts elsewhere (`status` shows them).
        elsewhere = meta.get("command") in ("export", "sync")
        if state in (NOT_STARTED, "dry-run", "unknown") or elsewhere:
            counts = None
        elif report is not None and report.state == stored:  # written by the last process
            counts = report.counts
        else:
            counts = count_outcomes(journal, int(meta.get("rows_read") or 0))
    finally:
        journal.close()
    command = str(meta.get("command") or "?")
    message = report.message if report is not None and report.state == stored else ""
    if state == "interrupted" and not message:
        message = f"the run was interrupted; run `bulkops resume {directory}` to finish it"
    return RunInfo(
        run_dir=str(directory),
        command=command_name(command),  # journals of older runs say "add"
        state=state,
        input=meta.get("input"),
        lists=_lists_of(meta),
        counts=counts,
        chunks=chunks,
        read_complete=bool(meta.get("read_complete")),
        age_seconds=round(age, 1),
        error=meta.get("error"),
        exit_code=_exit_code(state, meta, counts),
        message=message,
    )


def find_runs(root: str | Path) -> list[Path]:
    """Run directories directly under ``root`` (those holding a journal), oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and (p / JOURNAL_NAME).is_file()]
    return sorted(found, key=lambda p: (-_age(p), p.name))
