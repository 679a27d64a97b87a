"""``bulkops resume RUN_DIR``: finish an interrupted run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
)
from bulkops.cli.transfer import add_verbose_argument, finish, run_reporter, run_with_advice
from bulkops.engine.imports import resume_run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops resume``."""
    parser.add_argument("run_dir", type=Path, help="the run directory of the interrupted run")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        help="seconds without progress before an activity counts as stalled (default: the run's)",
    )
    add_connection_arguments(parser)
    add_output_arguments(parser)
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops resume``."""
    from bulkops.cli.export import resume_if_export

    exported = resume_if_export(args)
    if exported is not None:
        return exported
    reporter = run_reporter(args)

    async def main(stop):  # type: ignore[no-untyped-def]
        async with connect(args) as client:
            return await resume_run(
                client,
                args.run_dir,
                reporter=reporter,
                stop=stop,
                stall_timeout=args.stall_timeout,
            )

    return finish(args, run_with_advice(main, reporter, args.run_dir))
