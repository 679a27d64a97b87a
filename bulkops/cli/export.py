"""``bulkops export [WHAT] -o FILE``: a list's members or any collection, to CSV or JSON Lines.

Examples::

    bulkops export --list Customers -o customers.csv                  # EXPORT_CONTACTS activity
    bulkops export --list 7 -o members.jsonl --via feed                # the members feed
    bulkops export contacts --updated-since 2024-01-01T00:00:00.000Z --list-type active -o d.csv
    bulkops export contacts --updated-since bulkops-runs/d-export-... --list 7 -o next.csv
    bulkops export lists -o lists.jsonl
    bulkops export collection --collection campaigns/12/events/opens -o opens.csv

An interrupted export (Ctrl-C, SIGKILL, a lost connection) is finished by
``bulkops resume RUN_DIR``; :func:`resume_if_export` is that command's hook.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import trio

from bulkops.cli.common import (
    add_connection_arguments,
    add_output_arguments,
    connect,
    reporter_for,
    run_with_signals,
)
from bulkops.cli.events import EVENT_WHATS, add_event_arguments, event_collection
from bulkops.engine.export_runs import export_status, is_export_run, since_from_run
from bulkops.engine.exports import (
    ExportOptions,
    ExportReport,
    ExportWhat,
    Via,
    resume_export,
    run_export,
    summary,
)
from bulkops.errors import ConfigError, single_errors

__all__ = ["add_arguments", "resume_if_export", "run", "status_if_export"]

_WHATS = ("members", "contacts", "lists", "activities", "campaigns", "collection", *EVENT_WHATS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops export``."""
    parser.add_argument(
        "what",
        nargs="?",
        choices=_WHATS,
        help="what to export (default: members, with --list)",
    )
    add_event_arguments(parser)  # campaign-events / contact-events: ID, --type, --url
    parser.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    parser.add_argument("--list", metavar="NAME_OR_ID", help="the list (members; contacts)")
    parser.add_argument(
        "--list-type",
        choices=["active", "removed", "do-not-mail"],
        help="contacts of a system list (with --updated-since)",
    )
    parser.add_argument(
        "--updated-since",
        metavar="TIME_OR_RUN_DIR",
        help="contacts updated at or after this ISO-8601 UTC time, or after the high-water "
        "mark of an earlier export run directory",
    )
    parser.add_argument(
        "--collection", metavar="PATH", help="any paged collection (with `export collection`)"
    )
    parser.add_argument(
        "--format", choices=["csv", "jsonl"], help="default: jsonl for .jsonl/.ndjson, else csv"
    )
    parser.add_argument(
        "--columns",
        action="append",
        metavar="NAMES",
        help="contact columns, comma-separated (repeatable), e.g. 'First Name,Last Name', or "
        "'all'; email always comes first (default: all via an activity, what the feed "
        "carries via the feed)",
    )
    parser.add_argument(
        "--via",
        choices=["activity", "feed"],
        help="members: an EXPORT_CONTACTS activity (default) or the members feed",
    )
    parser.add_argument("--run-dir", type=Path, help="directory for the journal and report")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument(
        "--prefetch", type=int, default=2, help="feed pages fetched ahead (0-4, default 2)"
    )
    tuning.add_argument(
        "--detail-concurrency",
        type=int,
        default=8,
        help="contact GETs in flight when the feed lacks a column (default 8)",
    )
    tuning.add_argument(
        "--checkpoint-rows",
        type=int,
        default=10_000,
        help="rows between two journal checkpoints (default 10000)",
    )
    tuning.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        help="seconds without progress before the export activity counts as stalled",
    )
    add_connection_arguments(parser)
    add_output_arguments(parser)


def _columns(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    names = tuple(name.strip() for value in values for name in value.split(",") if name.strip())
    return names or None


def _since(value: str | None) -> str | None:
    if value is None or not Path(value).is_dir():
        return value
    return since_from_run(value)


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The :class:`ExportOptions` the flags describe.

    Raises:
        ConfigError: a combination that makes no sense.
    """
    what: ExportWhat | None = args.what or ("members" if args.list else None)
    events = event_collection(args.what, args)  # campaign-events / contact-events
    if events is not None:
        what = "collection"
    if what is None:
        raise ConfigError("say what to export (members, contacts, lists, …) or give --list")
    via: Via = args.via or ("activity" if what == "members" else "feed")
    return ExportOptions(
        what=what,
        list=args.list,
        list_type=args.list_type,
        updated_since=_since(args.updated_since),
        collection=args.collection if events is None else events,
        format=args.format,
        columns=_columns(args.columns),
        via=via,
        prefetch=args.prefetch,
        detail_concurrency=args.detail_concurrency,
        checkpoint_rows=args.checkpoint_rows,
        stall_timeout=args.stall_timeout,
    )


def print_export_report(args: argparse.Namespace, report: ExportReport) -> int:
    """Print the report (JSON with ``--json``, a summary otherwise); return the exit code."""
    if args.json:
        print(msgspec.json.encode({"event": "report", "report": report}).decode(), flush=True)
    else:
        print(summary(report), flush=True)
    return report.exit_code


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops export``."""
    options = options_from_args(args)
    reporter = reporter_for(args)

    async def main(stop: trio.Event) -> ExportReport:
        async with connect(args) as client:
            return await run_export(
                client,
                args.output,
                options=options,
                run_dir=args.run_dir,
                reporter=reporter,
                stop=stop,
            )

    with single_errors():
        report = run_with_signals(main, reporter)
    return print_export_report(args, report)


def resume_if_export(args: argparse.Namespace) -> int | None:
    """``bulkops resume RUN_DIR`` for an export run: finish it and return the exit code;
    None when ``RUN_DIR`` holds another kind of run."""
    if not is_export_run(args.run_dir):
        return None
    reporter = reporter_for(args)

    async def main(stop: trio.Event) -> ExportReport:
        async with connect(args) as client:
            return await resume_export(
                client,
                args.run_dir,
                reporter=reporter,
                stop=stop,
                stall_timeout=getattr(args, "stall_timeout", None),
            )

    with single_errors():
        report = run_with_signals(main, reporter)
    return print_export_report(args, report)


def status_if_export(args: argparse.Namespace) -> int | None:
    """``bulkops status RUN_DIR`` for an export run: print its state and return 0 when it is
    complete, 3 otherwise; None when ``RUN_DIR`` holds another kind of run."""
    if not is_export_run(args.run_dir):
        return None
    status = export_status(args.run_dir)
    if getattr(args, "json", False):
        print(msgspec.json.encode(status).decode(), flush=True)
    else:
        print(
            f"export {status['what']} via {status['via']}: {status['state']}, "
            f"{status['rows']:,} rows written so far (resumed {status['resumes']} times)"
        )
        if status["next"]:
            print(f"continues from {status['next']}")
        if status["report"] is not None:
            print("last report:")
            print(summary(status["report"]))
    return 0 if status["state"] == "complete" else 3
