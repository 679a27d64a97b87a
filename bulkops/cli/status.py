"""``bulkops status RUN_DIR``: what a run has done so far, from its journal (offline).

The numbers are those of ``report.json`` when the run's last process wrote one; the exit
code is the run's own (0 complete, 2 complete with rows not applied, 3 interrupted,
stalled or still running, 4 or 64 for a run that failed before it started).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from bulkops.engine.runinfo import RunInfo, describe_run

__all__ = ["add_arguments", "render", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops status``."""
    parser.add_argument("run_dir", type=Path, help="a run directory")
    parser.add_argument("--json", action="store_true", help="print JSON")


def render(info: RunInfo) -> str:
    """The lines ``bulkops status`` prints for a run."""
    what = info.input or (", ".join(info.lists) if info.lists else "lists")
    if info.state == "not-started":
        return (
            f"{info.command} of {what}: never started — {info.error}\n"
            "nothing was sent; run the corrected command again (the same --run-dir may be used)"
        )
    lines = [f"{info.command} of {what}: {info.state}"]
    if info.chunks:
        lines.append("chunks: " + ", ".join(f"{k} {v}" for k, v in sorted(info.chunks.items())))
    c = info.counts
    if c is not None:
        lines.append(
            f"rows read {c.read:,}: applied {c.applied:,}, failed {c.failed:,}, "
            f"rejected {c.rejected:,}, duplicate {c.duplicate:,}, pending {c.pending:,}"
        )
    if info.message:
        lines.append(info.message)
    lines.append(f"  report: {Path(info.run_dir) / 'report.json'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the run's state and outcome counts; return the run's own exit code."""
    from bulkops.cli.sync import status_if_sync

    synced = status_if_sync(args)
    if synced is not None:
        return synced
    info = describe_run(args.run_dir)  # read-only: the journal is left as it is
    if info.command == "export":
        from bulkops.cli.export import status_if_export

        exported = status_if_export(args)
        if exported is not None:
            return exported
    if args.json:
        print(msgspec.json.encode(info).decode(), flush=True)
    else:
        print(render(info), flush=True)
    return info.exit_code
