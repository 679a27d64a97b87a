"""``bulkops clear --list …``: remove every member of lists (one CLEAR activity)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bulkops.cli.common import (
    add_confirmation_argument,
    add_connection_arguments,
    add_output_arguments,
    confirm,
    connect,
    run_with_signals,
)
from bulkops.cli.transfer import add_verbose_argument, finish, run_reporter
from bulkops.engine.imports import run_clear

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops clear``."""
    parser.add_argument(
        "--list",
        dest="lists",
        action="append",
        required=True,
        metavar="NAME_OR_ID",
        help="list to empty (repeat for several)",
    )
    parser.add_argument("--run-dir", type=Path, help="directory for the journal and report")
    add_confirmation_argument(parser)
    add_connection_arguments(parser)
    add_output_arguments(parser)
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops clear``."""
    if not confirm(f"remove every member of {', '.join(args.lists)}?", assume_yes=args.yes):
        print("bulkops: nothing cleared", file=sys.stderr)
        return 1
    reporter = run_reporter(args)

    async def main(stop):  # type: ignore[no-untyped-def]
        async with connect(args) as client:
            return await run_clear(
                client, lists=args.lists, run_dir=args.run_dir, reporter=reporter, stop=stop
            )

    return finish(args, run_with_signals(main, reporter))
