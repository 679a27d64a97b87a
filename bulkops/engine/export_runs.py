"""An export's run directory, read offline: its status, its report, its high-water mark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bulkops.engine.export_options import ExportReport
from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.engine.outputs import Checkpoint, Checkpoints
from bulkops.engine.rundirs import REPORT_NAME, is_running
from bulkops.errors import ConfigError

__all__ = ["export_status", "is_export_run", "read_export_report", "since_from_run"]


def export_status(run_dir: str | Path) -> dict[str, Any]:
    """What an export run has done so far, from its journal (offline; for ``bulkops status``).

    A run whose journal says ``running`` while no process holds its lock (SIGKILL, a crash)
    is ``interrupted``.

    Returns:
        ``command``, ``state``, ``what``, ``via``, ``output``, ``rows`` (written and made
        durable), ``pages``, ``activity_id``, ``next`` (the page to continue from),
        ``high_water_mark``, ``resumes``, and ``report`` (the last report, or None).

    Raises:
        ConfigError: not an export run directory.
    """
    directory = Path(run_dir)
    if not is_export_run(directory):
        raise ConfigError(f"{directory} is not an export run")
    journal = Journal(directory, create=False)
    checkpoints = Checkpoints(directory)
    try:
        meta = journal.meta()
        checkpoint = checkpoints.load() or Checkpoint(offset=0, rows=0)
    finally:
        checkpoints.close()
        journal.close()
    options = meta.get("options", {})
    report_path = directory / REPORT_NAME
    state = meta.get("state")
    if state == "running" and not is_running(directory):  # killed: nobody holds its lock
        state = "interrupted"
    return {
        "command": "export",
        "state": state,
        "what": options.get("what"),
        "via": options.get("via"),
        "output": meta.get("output"),
        "rows": checkpoint.rows,
        "pages": checkpoint.pages,
        "activity_id": checkpoint.activity_id,
        "next": None if checkpoint.done else checkpoint.href,
        "high_water_mark": checkpoint.high_water,
        "resumes": meta.get("resumes", 0),
        "report": read_export_report(directory) if report_path.exists() else None,
    }


def is_export_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds the journal of an export (for ``bulkops resume``)."""
    if not (Path(run_dir) / JOURNAL_NAME).exists():
        return False
    journal = Journal(run_dir, create=False)
    try:
        return journal.meta().get("command") == "export"
    finally:
        journal.close()


def read_export_report(run_dir: str | Path) -> ExportReport:
    """The ``report.json`` of an export run.

    Raises:
        ConfigError: there is none, or it is not an export report.
    """
    path = Path(run_dir) / REPORT_NAME
    try:
        return msgspec.json.decode(path.read_bytes(), type=ExportReport)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{run_dir} holds no export report: {exc}") from None


def since_from_run(run_dir: str | Path) -> str:
    """The high-water mark a previous export run recorded, for ``--updated-since RUN_DIR``.

    Raises:
        ConfigError: the directory holds no finished export with a high-water mark.
    """
    report = read_export_report(run_dir)
    if report.state != "complete" or not report.high_water_mark:
        raise ConfigError(f"the export in {run_dir} recorded no high-water mark")
    return report.high_water_mark
