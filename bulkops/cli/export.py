"""``bulkops export [WHAT] -o FILE``: a list's members or any collection, to CSV or JSON Lines.

Examples::

    bulkops export --list Customers -o customers.csv                  # EXPORT_CONTACTS activity
    bulkops export --list 7 -o members.jsonl --via feed                # the members feed
    bulkops export contacts --updated-since 2024-01-01T00:00:00.000Z --list-type active -o d.csv
    bulkops export contacts --updated-since bulkops-runs/d-export-... --list 7 -o next.csv
    bulkops export lists -o lists.jsonl
    bulkops export collection --collection campaigns/12/events/opens -o opens.csv
    bulkops export collection --collection /ws/customers/demo/lists/3/members -o m.csv
    bulkops export lists -o - | head                                   # to stdout

An interrupted export (Ctrl-C, SIGKILL, a lost connection) is finished by
``bulkops resume RUN_DIR``; :func:`resume_if_export` is that command's hook.

``-o -`` writes to stdout. So that checkpoints and ``resume`` keep working, the rows go to
``stdout.csv`` (or ``.jsonl``) in the run directory first and are copied to stdout when the
export is complete; ``resume`` of such a run copies the whole file to stdout again. The
summary (or the ``--json`` events and report) then goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
from bulkops.engine.rundirs import default_run_dir
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
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="the file to write, or - for stdout (written when the export is complete)",
    )
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
        "--collection",
        metavar="PATH",
        help="any paged collection (with `export collection`): a path below the account "
        "(lists/3/members), the full path (/ws/customers/USER/lists/3/members) or its URL",
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


def collection_path(value: str | None) -> tuple[str | None, str | None]:
    """A collection as people write it, as the path below the account, and the username
    it names (None when it names none): ``lists/3``, ``/ws/customers/USER/lists/3`` and
    ``https://host/ws/customers/USER/lists/3`` all give ``lists/3``."""
    if value is None:
        return None, None
    text = value.strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        text = parts.path + (f"?{parts.query}" if parts.query else "")
    segments = text.lstrip("/").split("/")
    if len(segments) >= 3 and segments[:2] == ["ws", "customers"]:
        return "/".join(segments[3:]), unquote(segments[2])
    return text.lstrip("/"), None


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
    collection, _username = collection_path(args.collection)
    return ExportOptions(
        what=what,
        list=args.list,
        list_type=args.list_type,
        updated_since=_since(args.updated_since),
        collection=collection if events is None else events,
        format=args.format,
        columns=_columns(args.columns),
        via=via,
        prefetch=args.prefetch,
        detail_concurrency=args.detail_concurrency,
        checkpoint_rows=args.checkpoint_rows,
        stall_timeout=args.stall_timeout,
    )


_STDOUT_STEM = "stdout"


def _is_stdout_export(report: ExportReport) -> bool:
    """Whether the run writes to stdout (``-o -``): its file is the run directory's own."""
    output = Path(report.output)
    return output.stem == _STDOUT_STEM and output.parent.resolve() == Path(report.run_dir).resolve()


def _copy_to_stdout(path: Path) -> None:
    try:
        with path.open("rb") as source:
            shutil.copyfileobj(source, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Point stdout at /dev/null so
        # that flushing it at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def print_export_report(args: argparse.Namespace, report: ExportReport) -> int:
    """Print the report (JSON with ``--json``, a summary otherwise); return the exit code.

    For an export to stdout, the finished file is copied to stdout first and the report
    goes to stderr."""
    stream = sys.stdout
    if _is_stdout_export(report):
        stream = sys.stderr
        if report.state == "complete":
            _copy_to_stdout(Path(report.output))
    if args.json:
        encoded = msgspec.json.encode({"event": "report", "report": report}).decode()
        print(encoded, file=stream, flush=True)
    else:
        print(summary(report), file=stream, flush=True)
    return report.exit_code


def _output_and_run_dir(
    args: argparse.Namespace, options: ExportOptions
) -> tuple[Path, Path | None]:
    """Where the rows go and the run directory; ``-o -``: a file in the run directory."""
    if str(args.output) != "-":
        return args.output, args.run_dir
    run_dir = args.run_dir or default_run_dir(Path(_STDOUT_STEM), "export")
    suffix = ".jsonl" if options.format == "jsonl" else ".csv"
    return Path(run_dir).absolute() / f"{_STDOUT_STEM}{suffix}", run_dir


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops export``."""
    options = options_from_args(args)
    output, run_dir = _output_and_run_dir(args, options)
    reporter = reporter_for(args, stdout_taken=str(args.output) == "-")
    _path, username = collection_path(args.collection)

    async def main(stop: trio.Event) -> ExportReport:
        async with connect(args) as client:
            account = client.config.credentials.username
            if username is not None and username.lower() != account.lower():
                raise ConfigError(
                    f"--collection names the account {username!r}, but the credentials "
                    f"are for {account!r}"
                )
            return await run_export(
                client,
                output,
                options=options,
                run_dir=run_dir,
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
    to_stdout = any(  # the finished file, or the partial one (.stdout.csv.TAG.part)
        path.name.startswith((f"{_STDOUT_STEM}.", f".{_STDOUT_STEM}."))
        for path in Path(args.run_dir).iterdir()
    )
    reporter = reporter_for(args, stdout_taken=to_stdout)

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
