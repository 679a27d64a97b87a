"""``bulkops runs``: the runs under a runs root, and ``bulkops runs prune`` for finished ones.

The root is ``./bulkops-runs`` (where runs go without ``--run-dir``) or ``--root DIR``. A
run is *finished* when it completed, never started (it failed before sending anything), or
was a dry-run; interrupted and stalled runs are kept (``bulkops resume`` finishes them), and
a run a live process holds is never touched.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import msgspec

from bulkops.engine.journal import Journal
from bulkops.engine.ledger import OutcomeCounts
from bulkops.engine.rundirs import REPORT_NAME
from bulkops.engine.runinfo import RunInfo, describe_run, find_runs
from bulkops.errors import BulkOpsError, ConfigError

__all__ = ["FINISHED", "add_arguments", "parse_age", "run"]

#: States of runs that ``prune`` may remove.
FINISHED = frozenset({"complete", "not-started", "dry-run"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DEFAULT_ROOT = Path("bulkops-runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops runs`` and ``bulkops runs prune``."""
    parser.epilog = (
        "examples:\n  bulkops runs\n  bulkops runs --root /data/runs --json\n"
        "  bulkops runs prune --older-than 7d --yes"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _add_common(parser)
    sub = parser.add_subparsers(
        dest="runs_command", metavar="{prune}", help="prune: remove finished runs"
    )
    prune = sub.add_parser(
        "prune",
        help="remove finished runs (complete, never started, dry-runs)",
        description="Remove finished runs: complete, never started, or dry-runs. "
        "Interrupted and stalled runs are kept: `bulkops resume` finishes them.",
    )
    _add_common(prune)
    prune.add_argument(
        "--older-than",
        metavar="AGE",
        type=parse_age,
        help="only runs last written longer ago than AGE: 30m, 12h, 7d, 2w (default: any)",
    )
    prune.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the directory holding run directories (default ./bulkops-runs)",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def parse_age(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` or seconds, as seconds.

    Raises:
        argparse.ArgumentTypeError: not an age.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (e.g. 30m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _sync_counts(directory: Path) -> OutcomeCounts | None:
    """A sync run's rows as ``runs`` shows them: applied = added + updated + unchanged (the
    list holds them), failed = failed + opted out (not applied); from its ``report.json``,
    or, before it has one, every row read pending."""
    try:
        report = msgspec.json.decode((directory / REPORT_NAME).read_bytes())
        c = report["counts"]
        return OutcomeCounts(
            read=int(c["read"]),
            applied=int(c["added"]) + int(c["updated"]) + int(c["unchanged"]),
            failed=int(c["failed"]) + int(c["opted_out"]),
            rejected=int(c["rejected"]),
            duplicate=int(c["duplicate"]),
            pending=int(c.get("pending") or 0),
        )
    except (OSError, msgspec.DecodeError, KeyError, TypeError, ValueError):
        pass
    journal = Journal(directory, create=False, read_only=True)
    try:
        read = journal.meta().get("rows_read")
    finally:
        journal.close()
    if read is None:
        return None
    rows = int(read)
    return OutcomeCounts(read=rows, applied=0, failed=0, rejected=0, duplicate=0, pending=rows)


def _describe_all(root: Path) -> list[RunInfo]:
    infos: list[RunInfo] = []
    for directory in find_runs(root):
        try:
            info = describe_run(directory)
            if info.command == "sync" and info.counts is None:
                info = msgspec.structs.replace(info, counts=_sync_counts(directory))
            infos.append(info)
        except (BulkOpsError, OSError) as exc:
            infos.append(
                RunInfo(
                    run_dir=str(directory),
                    command="?",
                    state="unreadable",
                    input=None,
                    lists=[],
                    counts=None,
                    chunks={},
                    read_complete=False,
                    age_seconds=0.0,
                    error=str(exc),
                )
            )
    return infos


def _table(infos: list[RunInfo]) -> str:
    rows = [("STATE", "COMMAND", "READ", "APPLIED", "NOT APPLIED", "PENDING", "AGE", "DIRECTORY")]
    for info in infos:
        c = info.counts
        rows.append(
            (
                info.state,
                info.command,
                f"{c.read:,}" if c else "-",
                f"{c.applied:,}" if c else "-",
                f"{c.failed + c.rejected + c.duplicate:,}" if c else "-",
                f"{c.pending:,}" if c else "-",
                _age_text(info.age_seconds),
                info.run_dir,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "".join(cell.ljust(width + 2) for cell, width in zip(row, widths, strict=False)) + row[-1]
        for row in rows
    )


def _confirm(count: int, root: Path) -> bool:
    print(f"remove these {count} run directories from {root}? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _prune(args: argparse.Namespace, root: Path) -> int:
    older = args.older_than or 0.0
    doomed = [
        info for info in _describe_all(root) if info.state in FINISHED and info.age_seconds >= older
    ]
    if not doomed:
        print(f"no finished runs to remove under {root}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"{len(doomed)} finished runs would be removed: pass --yes to remove them "
                "without a terminal to confirm on"
            )
        print(_table(doomed))
        if not _confirm(len(doomed), root):
            print("nothing removed")
            return 0
    removed = []
    for info in doomed:
        directory = Path(info.run_dir)
        # The state was read moments ago: a run taken up since then is left alone.
        if describe_run(directory).state in FINISHED:
            shutil.rmtree(directory)
            removed.append(info.run_dir)
    if getattr(args, "json", False):
        print(msgspec.json.encode({"removed": removed}).decode())
    else:
        print(f"removed {len(removed)} finished runs from {root}")
    return 0


def run(args: argparse.Namespace) -> int:
    """List the runs under the root (``runs``) or remove finished ones (``runs prune``)."""
    root: Path = getattr(args, "root", _DEFAULT_ROOT)
    if args.runs_command == "prune":
        return _prune(args, root)
    infos = _describe_all(root)
    if getattr(args, "json", False):
        print(msgspec.json.encode(infos).decode())
    elif not infos:
        print(f"no runs under {root}")
    else:
        print(_table(infos))
    return 0
