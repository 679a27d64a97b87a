"""Writing and reading ``report.json``, and the human summary of a report."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bulkops.engine.ledger import ImportReport, write_atomically

__all__ = ["read_report", "summary", "write_report"]

from bulkops.engine.rundirs import REPORT_NAME

_ENCODER = msgspec.json.Encoder()


def write_report(run_dir: Path, report: ImportReport) -> Path:
    """Write ``report.json`` atomically into the run directory; return its path."""
    path = Path(run_dir) / REPORT_NAME
    write_atomically(path, [msgspec.json.format(_ENCODER.encode(report), indent=2), b"\n"])
    return path


def read_report(run_dir: Path) -> ImportReport | None:
    """The run's last report, or None when it has none yet."""
    path = Path(run_dir) / REPORT_NAME
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=ImportReport)


def summary(report: ImportReport) -> str:
    """A few lines for people: what happened to every row, where the files are."""
    c = report.counts
    if report.members_removed is not None:
        head = (
            f"{report.command} {report.state}: {report.members_removed:,} members removed "
            f"from {', '.join(report.lists)}"
        )
    else:
        read_as = f" as {report.encoding}" if report.encoding else ""
        head = (
            f"{report.command} {report.state}: {c.read:,} rows read{read_as} — "
            f"{c.applied:,} applied, "
            f"{c.failed:,} failed, {c.rejected:,} rejected, {c.duplicate:,} duplicate"
            + (f", {c.pending:,} pending" if c.pending else "")
        )
    lines = [
        head,
        f"{len(report.activities)} activities, {report.requests} requests "
        f"({report.retries} retries, {report.throttled} throttled), "
        f"{report.wall_seconds:.1f} s wall, {report.rows_per_second:,.0f} rows/s, "
        f"server busy {report.server_busy_seconds:.1f} s, "
        f"peak RSS {report.peak_rss_bytes / 1048576:.0f} MiB",
    ]
    if report.chunks_sent_twice:
        lines.append(f"chunks that may have been applied twice: {report.chunks_sent_twice}")
    for name, path in sorted(report.files.items()):
        lines.append(f"  {name}: {path}")
    lines.append(f"  report: {Path(report.run_dir) / REPORT_NAME}")
    if report.message:
        lines.append(report.message)
    return "\n".join(lines)
