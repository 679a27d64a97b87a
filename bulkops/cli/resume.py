"""``bulkops resume RUN_DIR``: finish an interrupted run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
)
from bulkops.cli.transfer import (
    add_limit_arguments,
    add_verbose_argument,
    chunk_limits,
    finish,
    run_reporter,
    run_with_advice,
    warn,
)
from bulkops.engine.imports import ImportOptions, resume_run
from bulkops.engine.journal import Journal
from bulkops.stream.options import ChunkLimits

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops resume``."""
    parser.add_argument("run_dir", type=Path, help="the run directory of the interrupted run")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        help="seconds without progress before an activity counts as stalled (default: the run's)",
    )
    limits = parser.add_argument_group(
        "cutting the rows again",
        "new limits for a run whose first activities the server refused as too large"
        " (allowed while none was accepted)",
    )
    add_limit_arguments(limits, default=False)
    add_connection_arguments(parser)
    add_output_arguments(parser)
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops resume``."""
    from bulkops.cli.export import resume_if_export

    exported = resume_if_export(args)
    if exported is not None:
        return exported
    from bulkops.cli.sync import resume_if_sync

    synced = resume_if_sync(args)
    if synced is not None:
        return synced
    limits = None
    if args.max_rows is not None or args.max_bytes is not None:
        limits = _stored_limits_with(args)
    reporter = run_reporter(args)

    async def main(stop):  # type: ignore[no-untyped-def]
        async with connect(args) as client:
            return await resume_run(
                client,
                args.run_dir,
                reporter=reporter,
                stop=stop,
                stall_timeout=args.stall_timeout,
                limits=limits,
            )

    return finish(args, run_with_advice(main, reporter, args.run_dir))


def _stored_limits_with(args: argparse.Namespace) -> ChunkLimits:
    """The run's stored limits with ``--max-rows`` / ``--max-bytes`` applied (checked)."""
    journal = Journal(args.run_dir, create=False)
    try:
        stored = ImportOptions.from_meta(journal.meta()["options"]).limits
    finally:
        journal.close()
    return chunk_limits(
        args.max_rows if args.max_rows is not None else stored.max_rows,
        args.max_bytes if args.max_bytes is not None else stored.max_bytes,
        stored.form,
        warn=warn,
    )
