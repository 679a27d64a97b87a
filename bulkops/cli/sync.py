"""``bulkops sync FILE --list NAME_OR_ID``: make a list's members equal a file's valid rows,
sending only what changed (and ``resume``/``status`` of a sync run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec
import trio

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
    run_with_signals,
)
from bulkops.cli.transfer import (
    add_reading_arguments,
    add_sending_arguments,
    chunk_limits,
    warn,
)
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.progress import NullReporter, Reporter, silence_stdout
from bulkops.engine.rundirs import default_run_dir
from bulkops.engine.sync import is_sync_run, resume_sync, run_sync
from bulkops.engine.sync_report import DEFAULT_MAX_REMOVE, SyncOptions, SyncReport
from bulkops.errors import ConfigError, InputError, single_errors
from bulkops.stream.options import ReadOptions

__all__ = ["add_arguments", "render", "resume_if_sync", "run", "status_if_sync"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops sync``."""
    parser.add_argument("file", type=Path, help="CSV (or TXT) file, or an XML contact set")
    parser.add_argument("--list", required=True, metavar="NAME_OR_ID", help="the list to sync")
    parser.add_argument(
        "--remove-missing",
        action="store_true",
        help="remove members whose email no valid row of the file has (default: keep them)",
    )
    parser.add_argument(
        "--max-remove",
        default=DEFAULT_MAX_REMOVE,
        metavar="N|P%",
        help="stop before sending anything when more members would be removed"
        f" (default {DEFAULT_MAX_REMOVE.replace('%', '%%')} of the list)",  # argparse: %%
    )
    parser.add_argument(
        "-y", "--yes", action="store_true", help="remove more than --max-remove anyway"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan only: print the counts and write the outcome files; send nothing",
    )
    parser.add_argument(
        "--full", action="store_true", help="read the whole list, whatever snapshot there is"
    )
    parser.add_argument("--run-dir", type=Path, help="directory for the journal and outcome files")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    add_sending_arguments(tuning)
    add_reading_arguments(parser.add_argument_group("reading the input (as import)"))
    add_connection_arguments(parser)
    add_output_arguments(parser)


def _read_options(args: argparse.Namespace) -> ReadOptions:
    mapping = []
    for item in args.map:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--map takes SOURCE=TARGET, not {item!r}")
        mapping.append((source.strip(), target.strip()))
    delimiter = args.delimiter
    if delimiter is not None and len(delimiter.encode()) != 1:
        if delimiter not in ("\\t", "tab"):
            raise ConfigError("--delimiter takes one character")
        delimiter = "\t"
    return ReadOptions(
        format=args.format,
        encoding=args.encoding,
        delimiter=delimiter,
        mapping=tuple(mapping),
        ignore_unknown=args.ignore_unknown_columns,
    )


def options_of(args: argparse.Namespace) -> SyncOptions:
    """The sync's options from its arguments (checked before anything is sent).

    Raises:
        ConfigError: a bad option.
    """
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    send = ImportOptions(
        concurrency=args.concurrency,
        uploads=min(2, args.concurrency),
        stall_timeout=args.stall_timeout,
        read=_read_options(args),
        limits=chunk_limits(args.max_rows, args.max_bytes, args.form, warn=warn),
    )
    return SyncOptions(
        list=args.list,
        remove_missing=args.remove_missing,
        max_remove=args.max_remove,
        yes=args.yes,
        dry_run=args.dry_run,
        full=args.full,
        put_concurrency=args.concurrency,
        send=send,
    )


def render(report: SyncReport) -> str:
    """The lines a sync prints at the end."""
    c, p = report.counts, report.plan
    title = {"dry-run": "sync plan (dry run, nothing sent)"}.get(report.state, "sync")
    lines = [f"{title} of {report.input} to list {report.list!r}: {report.state}"]
    if report.base is not None:
        b = report.base
        how = f"{b.source} read" + (f" ({b.reason})" if b.reason else "")
        lines.append(f"list: {b.members:,} members ({how}, {b.requests:,} requests)")
    if report.state in ("dry-run", "refused"):
        lines.append(
            f"rows read {p.read:,}: add {p.added:,}, update {p.updated:,} ({p.put:,} by PUT),"
            f" unchanged {p.unchanged:,}, opted out {p.opted_out:,}, rejected {p.rejected:,},"
            f" duplicate {p.duplicate:,}; remove {p.remove:,}"
        )
        rows = p.added + p.updated - p.put
        lines.append(
            f"would send {rows:,} rows in add activities, {p.put:,} PUTs,"
            f" {p.remove:,} emails in remove activities"
        )
    else:
        lines.append(
            f"rows read {c.read:,}: added {c.added:,}, updated {c.updated:,},"
            f" unchanged {c.unchanged:,}, opted out {c.opted_out:,}, rejected {c.rejected:,},"
            f" duplicate {c.duplicate:,}, failed {c.failed:,}"
            + (f", pending {c.pending:,}" if c.pending else "")
        )
        lines.append(
            f"removed {c.removed:,}" + (f" ({c.remove_failed:,} failed)" if c.remove_failed else "")
        )
        lines.append(
            f"sent {report.rows_sent:,} rows, {report.puts:,} PUTs, {report.removes_sent:,}"
            f" removals; {report.requests:,} requests, {report.bytes_sent:,} bytes,"
            f" {report.wall_seconds:.1f} s"
        )
    if report.message:
        lines.append(report.message)
    lines.append(f"  report: {Path(report.run_dir) / 'report.json'}")
    return "\n".join(lines)


class _Phases:
    """Prints a sync's ``sync`` events on stderr, one line each (nothing else)."""

    interval = 3600.0

    def start(self) -> None:
        """Nothing to start."""

    def update(self, counters: object) -> None:
        """No live counters."""

    def event(self, kind: str, **data: object) -> None:
        """Say where the sync is."""
        if kind == "sync":
            print(f"bulkops: {data.get('message')}", file=sys.stderr, flush=True)

    def stop(self, counters: object) -> None:
        """Nothing to stop."""

    def on_closed(self, callback: object) -> None:
        """stderr: never closed."""


def _reporter(args: argparse.Namespace) -> Reporter:
    return NullReporter() if args.quiet or args.json else _Phases()


def _print(args: argparse.Namespace, report: SyncReport) -> int:
    try:
        if args.json:
            encoded = msgspec.json.encode({"event": "report", "report": report}).decode()
            print(encoded, flush=True)
        else:
            print(render(report), flush=True)
    except BrokenPipeError:
        silence_stdout()
    return report.exit_code


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops sync``."""
    options = options_of(args)
    if not args.file.is_file():
        raise InputError("no such file", path=str(args.file))
    run_dir = args.run_dir if args.run_dir is not None else default_run_dir(args.file, "sync")
    reporter = _reporter(args)

    async def main(stop: trio.Event) -> SyncReport:
        async with connect(args) as client:
            return await run_sync(
                client, args.file, options=options, run_dir=run_dir, reporter=reporter, stop=stop
            )

    try:
        with single_errors():
            report = run_with_signals(main)
    except KeyboardInterrupt:
        print(f"bulkops: stopped; run `bulkops resume {run_dir}` to finish", file=sys.stderr)
        raise
    return _print(args, report)


def resume_if_sync(args: argparse.Namespace) -> int | None:
    """``bulkops resume RUN_DIR`` for a sync run; None when it holds another kind of run."""
    if not is_sync_run(args.run_dir):
        return None

    async def main(stop: trio.Event) -> SyncReport:
        async with connect(args) as client:
            return await resume_sync(client, args.run_dir, reporter=_reporter(args), stop=stop)

    with single_errors():
        report = run_with_signals(main)
    return _print(args, report)


def status_if_sync(args: argparse.Namespace) -> int | None:
    """``bulkops status RUN_DIR`` for a sync run: its phase and last report; None when it
    holds another kind of run."""
    if not is_sync_run(args.run_dir):
        return None
    from bulkops.engine.journal import Journal
    from bulkops.engine.rundirs import REPORT_NAME, is_running

    directory = Path(args.run_dir)
    journal = Journal(directory, create=False, read_only=True)
    try:
        meta = journal.meta()
    finally:
        journal.close()
    state = str(meta.get("state") or "unknown")
    if state == "running" and not is_running(directory):
        state = "interrupted"
    report: SyncReport | None = None
    path = directory / REPORT_NAME
    if path.is_file():
        try:
            report = msgspec.json.decode(path.read_bytes(), type=SyncReport)
        except msgspec.MsgspecError:
            report = None
    if report is not None and report.state != state:
        report = None
    code = (
        report.exit_code
        if report is not None
        else 3
        if state in ("interrupted", "running", "stalled")
        else 0
    )
    if args.json:
        out = {
            "command": "sync",
            "state": state,
            "phase": meta.get("phase"),
            "requests": int(meta.get("requests") or 0),
            "report": report,
        }
        print(msgspec.json.encode(out).decode(), flush=True)
    elif report is not None:
        print(render(report), flush=True)
    else:
        requests = int(meta.get("requests") or 0)
        print(
            f"sync of {meta.get('input')}: {state} (phase {meta.get('phase')},"
            f" {requests:,} requests so far)",
            flush=True,
        )
        if state == "interrupted":
            print(f"run `bulkops resume {directory}` to finish it", flush=True)
    return code
