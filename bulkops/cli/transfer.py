"""``bulkops import FILE`` and ``bulkops remove FILE``: a contact file onto or off lists."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
    print_report,
    run_with_signals,
)
from bulkops.engine.imports import ImportOptions, run_import
from bulkops.engine.ledger import ImportReport
from bulkops.engine.planner import dry_run
from bulkops.engine.progress import Reporter, make_reporter, silence_stdout
from bulkops.engine.report import read_report
from bulkops.engine.rundirs import default_run_dir
from bulkops.engine.runinfo import describe_run
from bulkops.errors import BulkOpsError, ConfigError, InputError
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.wire.activity import DEFAULT_MAX_ACTIVITY_BYTES, DEFAULT_MAX_ACTIVITY_ROWS

__all__ = [
    "add_arguments",
    "add_remove_arguments",
    "add_verbose_argument",
    "finish",
    "run",
    "run_remove",
    "run_reporter",
    "run_with_advice",
]


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose``: also show the engine's internal events (how lost POSTs resolved)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show internal events (e.g. how a POST whose answer was lost was resolved)",
    )


def run_reporter(args: argparse.Namespace) -> Reporter:
    """The progress reporter the flags ask for."""
    return make_reporter(
        json_output=args.json, quiet=args.quiet, verbose=getattr(args, "verbose", False)
    )


def run_with_advice(
    main: Callable[[trio.Event], Awaitable[ImportReport]], reporter: Reporter, run_dir: Path
) -> ImportReport:
    """:func:`run_with_signals`; a second Ctrl-C (no report) is answered with the command
    that finishes the run. A Ctrl-C that comes when the run has already completed changes
    nothing: its report is returned, and Ctrl-C is ignored while it is printed.

    Raises:
        KeyboardInterrupt: after a second Ctrl-C, with the advice printed.
    """
    try:
        report = run_with_signals(main, reporter)
    except KeyboardInterrupt:
        finished = _completed_report(run_dir)
        if finished is None:
            print(
                f"bulkops: stopped at once; run `bulkops resume {run_dir}` to finish",
                file=sys.stderr,
            )
            raise
        report = finished
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: only printing is left
    return report


def _completed_report(run_dir: Path) -> ImportReport | None:
    """The report of a run that has completed, or None."""
    try:
        info = describe_run(run_dir)
        report = read_report(run_dir)
    except (BulkOpsError, OSError, msgspec.MsgspecError):
        return None
    if info.state != "complete" or report is None or report.state != "complete":
        return None
    return report


def finish(args: argparse.Namespace, report: ImportReport) -> int:
    """Print the report and return the run's exit code; a reader of stdout that went away
    (``| head -1``) changes nothing: the report is in ``report.json``."""
    try:
        return print_report(args, report)
    except BrokenPipeError:
        silence_stdout()
        return report.exit_code


def _add_common(parser: argparse.ArgumentParser, *, remove: bool) -> None:
    parser.add_argument("file", type=Path, help="CSV (or TXT) file, or an XML contact set")
    parser.add_argument(
        "--list",
        dest="lists",
        action="append",
        required=True,
        metavar="NAME_OR_ID",
        help="list to work on (repeat for several)",
    )
    if not remove:
        parser.add_argument(
            "--create-lists", action="store_true", help="create named lists that do not exist"
        )
    parser.add_argument("--run-dir", type=Path, help="directory for the journal and outcome files")
    parser.add_argument("--dry-run", action="store_true", help="validate and plan; send nothing")
    parser.add_argument(
        "--write-applied", action="store_true", help="also write applied.csv (every applied row)"
    )
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    tuning.add_argument(
        "--uploads",
        type=int,
        default=2,
        help="chunk bodies (up to 4 MiB each) being sent at once, at most --concurrency"
        " (default 2)",
    )
    tuning.add_argument(
        "--max-queued", type=int, default=50, help="unfinished activities at most (default 50)"
    )
    tuning.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        help="seconds without progress before an activity counts as stalled (default 600)",
    )
    tuning.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ACTIVITY_ROWS)
    tuning.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_ACTIVITY_BYTES)
    tuning.add_argument(
        "--form",
        choices=["multipart", "urlencoded"],
        default="multipart",
        help="request body encoding (default multipart)",
    )
    reading = parser.add_argument_group("reading the input")
    reading.add_argument("--format", choices=["csv", "xml"], help="default: from the file name")
    reading.add_argument("--encoding", help="utf-8 (default, BOM-aware), utf-16, cp1252, latin-1")
    reading.add_argument("--delimiter", help="field delimiter (default: detected)")
    reading.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        help="map a header to a column, e.g. 'Mail=EMAIL ADDRESS'",
    )
    reading.add_argument(
        "--ignore-unknown-columns", action="store_true", help="drop columns that map to nothing"
    )
    add_connection_arguments(parser)
    add_output_arguments(parser)
    add_verbose_argument(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops import``."""
    _add_common(parser, remove=False)


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops remove``."""
    _add_common(parser, remove=True)


def _read_options(args: argparse.Namespace) -> ReadOptions:
    mapping = []
    for item in args.map:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--map takes SOURCE=TARGET, not {item!r}")
        mapping.append((source.strip(), target.strip()))
    if args.delimiter is not None and len(args.delimiter.encode()) != 1:
        if args.delimiter in ("\\t", "tab"):
            args.delimiter = "\t"
        else:
            raise ConfigError("--delimiter takes one character")
    return ReadOptions(
        format=args.format,
        encoding=args.encoding,
        delimiter=args.delimiter,
        mapping=tuple(mapping),
        ignore_unknown=args.ignore_unknown_columns,
    )


def _run(args: argparse.Namespace, kind: str) -> int:
    if args.concurrency < 1 or args.max_queued < 1 or args.uploads < 1:
        raise ConfigError("--concurrency, --uploads and --max-queued must be at least 1")
    options = ImportOptions(
        kind=kind,  # type: ignore[arg-type]
        lists=tuple(args.lists),
        create_lists=getattr(args, "create_lists", False),
        concurrency=args.concurrency,
        uploads=args.uploads,
        max_queued=args.max_queued,
        stall_timeout=args.stall_timeout,
        write_applied=args.write_applied,
        read=_read_options(args),
        limits=ChunkLimits(max_rows=args.max_rows, max_bytes=args.max_bytes, form=args.form),
    )
    if args.dry_run:
        plan = dry_run(
            args.file,
            options.read,
            options.limits,
            kind=kind,
            lists=args.lists,
            run_dir=args.run_dir,
        )
        print(plan.render(json_output=args.json), flush=True)
        return plan.exit_code
    reporter = run_reporter(args)
    if not args.file.is_file():
        raise InputError("no such file", path=str(args.file))
    # Chosen here, so that the advice after a second Ctrl-C can name it.
    run_dir = args.run_dir if args.run_dir is not None else default_run_dir(args.file, kind)

    async def main(stop):  # type: ignore[no-untyped-def]
        async with connect(args) as client:
            return await run_import(
                client, args.file, options=options, run_dir=run_dir, reporter=reporter, stop=stop
            )

    try:
        report = run_with_advice(main, reporter, run_dir)
    except BaseException:
        if args.run_dir is None:  # a directory we made, still empty: no server, say
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    return finish(args, report)


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops import``."""
    return _run(args, "add")  # the engine's name for import


def run_remove(args: argparse.Namespace) -> int:
    """Run ``bulkops remove``."""
    return _run(args, "remove")
