"""``bulkops status RUN_DIR``: what a run has done so far, from its journal (offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from bulkops.engine.journal import Journal
from bulkops.engine.ledger import count_outcomes
from bulkops.engine.report import read_report, summary

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops status``."""
    parser.add_argument("run_dir", type=Path, help="a run directory")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Print the run's state: chunks by state, outcome counts, the last report."""
    from bulkops.cli.export import status_if_export

    exported = status_if_export(args)
    if exported is not None:
        return exported
    journal = Journal(args.run_dir, create=False)
    try:
        meta = journal.meta()
        chunks = journal.chunks()
        by_state: dict[str, int] = {}
        for chunk in chunks:
            by_state[chunk.state] = by_state.get(chunk.state, 0) + 1
        counts = count_outcomes(journal, int(meta.get("rows_read", 0)))
    finally:
        journal.close()
    report = read_report(args.run_dir)
    if args.json:
        payload = {
            "command": meta.get("command"),
            "state": meta.get("state"),
            "input": meta.get("input"),
            "chunks": by_state,
            "counts": counts,
            "read_complete": bool(meta.get("read_complete")),
        }
        print(msgspec.json.encode(payload).decode())
    else:
        print(f"{meta.get('command')} of {meta.get('input') or 'lists'}: {meta.get('state')}")
        print("chunks: " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "none")
        print(
            f"rows read {counts.read:,}: applied {counts.applied:,}, failed {counts.failed:,}, "
            f"rejected {counts.rejected:,}, duplicate {counts.duplicate:,}, "
            f"pending {counts.pending:,}"
        )
        if report is not None:
            print("last report:")
            print(summary(report))
    return 0 if meta.get("state") == "complete" else 3
