"""Run directories: where a run's journal, outcome files and ``report.json`` live.

A run directory holds one run: a new run refuses a directory that already has a journal
(``resume`` finishes it instead).
"""

from __future__ import annotations

import time
from pathlib import Path

from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.errors import ConfigError

__all__ = ["REPORT_NAME", "default_run_dir", "new_journal"]

#: Every run's report, next to its journal.
REPORT_NAME = "report.json"


def default_run_dir(path: Path | None, command: str) -> Path:
    """``./bulkops-runs/{stem}-{command}-{YYYYmmdd-HHMMSS}``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = path.stem if path is not None else "lists"
    return Path("bulkops-runs") / f"{stem}-{command}-{stamp}"


def new_journal(directory: Path) -> Journal:
    """The journal of a new run; a directory that already holds a run is refused.

    Raises:
        ConfigError: ``directory`` already holds a run.
    """
    if (directory / JOURNAL_NAME).exists():
        raise ConfigError(f"{directory} already holds a run: use `bulkops resume {directory}`")
    return Journal(directory, create=True)
