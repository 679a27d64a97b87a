"""``bulkops import FILE`` and ``bulkops remove FILE``: a contact file onto or off lists."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
    print_report,
    run_with_signals,
)
from bulkops.engine.dry_run import dry_run
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.journal import JOURNAL_NAME
from bulkops.engine.ledger import ImportReport
from bulkops.engine.progress import Reporter, make_reporter, silence_stdout
from bulkops.engine.report import read_report
from bulkops.engine.rundirs import default_run_dir
from bulkops.engine.runinfo import describe_run
from bulkops.errors import ApiError, BulkOpsError, ConfigError, InputError, single_errors
from bulkops.stream.options import ChunkLimits, Form, ReadOptions
from bulkops.wire.activity import (
    DEFAULT_MAX_ACTIVITY_BYTES,
    DEFAULT_MAX_ACTIVITY_ROWS,
    MIN_ACTIVITY_ROWS,
)

if TYPE_CHECKING:
    import trio

__all__ = [
    "add_arguments",
    "add_limit_arguments",
    "add_remove_arguments",
    "add_verbose_argument",
    "chunk_limits",
    "finish",
    "run",
    "run_remove",
    "run_reporter",
    "run_with_advice",
    "spool_stdin",
    "warn",
]

#: The smallest ``--max-rows``: a file of any length can be cut into activities of
#: ``MIN_ACTIVITY_ROWS`` to ``max_rows`` rows only when ``max_rows >= 2 * MIN_ACTIVITY_ROWS``.
MIN_LIMIT_ROWS = 2 * MIN_ACTIVITY_ROWS
#: The smallest ``--max-bytes``: room for the header and 50 rows of a realistic size.
MIN_LIMIT_BYTES = 64 * 1024


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
    parser.add_argument(
        "file",
        type=Path,
        help="CSV (or TXT) file, or an XML contact set; '-' reads standard input (kept in"
        " the run directory, so that `bulkops resume` can finish the run)",
    )
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
    add_sending_arguments(tuning)
    add_reading_arguments(parser.add_argument_group("reading the input"))
    add_connection_arguments(parser)
    add_output_arguments(parser)
    add_verbose_argument(parser)


def add_sending_arguments(tuning: argparse._ArgumentGroup) -> None:
    """``--stall-timeout``, the activity limits and ``--form`` (import and sync)."""
    tuning.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        help="seconds without progress before an activity counts as stalled (default 600)",
    )
    add_limit_arguments(tuning)
    tuning.add_argument(
        "--form",
        choices=["multipart", "urlencoded"],
        default="multipart",
        help="request body encoding (default multipart)",
    )


def add_reading_arguments(reading: argparse._ArgumentGroup) -> None:
    """How an input file is read (import and sync)."""
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


def add_limit_arguments(
    group: argparse._ArgumentGroup | argparse.ArgumentParser, *, default: bool = True
) -> None:
    """``--max-rows`` and ``--max-bytes`` (``bulkops resume`` has them without defaults)."""
    group.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ACTIVITY_ROWS if default else None,
        help=f"rows per activity, {MIN_LIMIT_ROWS}-{DEFAULT_MAX_ACTIVITY_ROWS}"
        f" (default {DEFAULT_MAX_ACTIVITY_ROWS}, the API's limit)",
    )
    group.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_ACTIVITY_BYTES if default else None,
        help=f"bytes of data per activity, {MIN_LIMIT_BYTES}-{DEFAULT_MAX_ACTIVITY_BYTES}"
        f" (default {DEFAULT_MAX_ACTIVITY_BYTES}, the API's 4 MiB limit)",
    )


def chunk_limits(
    max_rows: int, max_bytes: int, form: Form = "multipart", *, warn: Callable[[str], None]
) -> ChunkLimits:
    """The limits of ``--max-rows`` / ``--max-bytes``, checked before anything is sent.

    The v1 API publishes no limits; the documented ones (40,000 rows, 4 MiB of data per
    activity) are the most a request may carry: larger values are lowered to them, with a
    note through ``warn``. Values too small to cut a file by are usage errors.

    Raises:
        ConfigError: a limit below its minimum.
    """
    if max_rows < MIN_LIMIT_ROWS:
        raise ConfigError(
            f"--max-rows must be at least {MIN_LIMIT_ROWS} (activities carry "
            f"{MIN_ACTIVITY_ROWS} rows or more), not {max_rows}"
        )
    if max_bytes < MIN_LIMIT_BYTES:
        raise ConfigError(
            f"--max-bytes must be at least {MIN_LIMIT_BYTES:,} (a request must hold "
            f"{MIN_LIMIT_ROWS} rows of any valid size), not {max_bytes:,}"
        )
    if max_rows > DEFAULT_MAX_ACTIVITY_ROWS:
        warn(
            f"--max-rows {max_rows:,} is over the API's limit of "
            f"{DEFAULT_MAX_ACTIVITY_ROWS:,} rows per activity; using {DEFAULT_MAX_ACTIVITY_ROWS:,}"
        )
        max_rows = DEFAULT_MAX_ACTIVITY_ROWS
    if max_bytes > DEFAULT_MAX_ACTIVITY_BYTES:
        warn(
            f"--max-bytes {max_bytes:,} is over the API's limit of "
            f"{DEFAULT_MAX_ACTIVITY_BYTES:,} bytes per activity; using "
            f"{DEFAULT_MAX_ACTIVITY_BYTES:,}"
        )
        max_bytes = DEFAULT_MAX_ACTIVITY_BYTES
    return ChunkLimits(max_rows=max_rows, max_bytes=max_bytes, form=form)


def warn(message: str) -> None:
    """Print a note on stderr (the options were adjusted, not refused)."""
    print(f"bulkops: note: {message}", file=sys.stderr, flush=True)


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


#: The name of standard input's copy inside the run directory.
STDIN_NAME = "stdin.input"


def spool_stdin(run_dir: Path, stream: BinaryIO | None = None) -> Path:
    """Copy standard input into ``run_dir`` (private, 0600) and return the copy's path.

    The run then reads, digests and resumes from the copy, like any named file.

    Raises:
        ConfigError: standard input is a terminal, or ``run_dir`` already holds a run.
    """
    source = stream if stream is not None else sys.stdin.buffer
    if source.isatty():
        raise ConfigError("'-' reads contacts from standard input: pipe or redirect a file in")
    if (run_dir / JOURNAL_NAME).exists():
        raise ConfigError(f"{run_dir} already holds a run: use `bulkops resume {run_dir}`")
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = run_dir / STDIN_NAME
    partial = run_dir / (STDIN_NAME + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    return target


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
        limits=chunk_limits(args.max_rows, args.max_bytes, args.form, warn=warn),
    )
    if str(args.file) == "-":
        args.run_dir = args.run_dir or default_run_dir(
            Path("stdin"), "dry-run" if args.dry_run else kind
        )
        args.file = spool_stdin(args.run_dir)
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

    from bulkops.engine.imports import run_import  # trio, httpx: not for a dry run

    async def main(stop):  # type: ignore[no-untyped-def]
        async with connect(args) as client:
            return await run_import(
                client, args.file, options=options, run_dir=run_dir, reporter=reporter, stop=stop
            )

    try:
        with single_errors():
            report = run_with_advice(main, reporter, run_dir)
    except BaseException as exc:
        if isinstance(exc, ApiError):
            _advise_smaller_limits(exc, run_dir)
        if args.run_dir is None:  # a directory we made, still empty: no server, say
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    return finish(args, report)


def _advise_smaller_limits(exc: ApiError, run_dir: Path) -> None:
    """A 400 for an activity's size says how to finish the run: the v1 API publishes no
    limits, so a server may take fewer rows or bytes than documented."""
    if exc.status == 400 and exc.method == "POST" and "/activities" in (exc.url or ""):
        exc.message += (
            "; the server takes smaller activities than these limits allowed: finish "
            f"the run with `bulkops resume {run_dir} --max-rows N` (or --max-bytes N) "
            "with smaller values"
        )
        exc.args = (str(exc),)


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops import``."""
    return _run(args, "add")  # the engine's name for import


def run_remove(args: argparse.Namespace) -> int:
    """Run ``bulkops remove``."""
    return _run(args, "remove")
