"""The ``bulkops`` command line: ``main(argv) -> int``.

Each command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them together and turns the error tree into
messages and exit codes, in one place.

Errors of the Python API name settings, not flags: a setting in backticks (``create_lists``
between backquotes) is shown here as the command's flag for it (``--create-lists``), found
from the parser (an option's ``dest``).

Exit codes (also in ``bulkops --help``):

* 0  — success (for imports: every row applied)
* 1  — a confirmation was declined (``clear``); nothing was done
* 2  — finished, but some rows failed, were rejected or were duplicates
* 3  — stalled or interrupted; the run can be resumed
* 4  — fatal: authentication, unreadable input, server unreachable after retries
* 64 — usage error
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence

from bulkops._version import __version__
from bulkops.errors import ActivityStalled, BulkOpsError, ConfigError, single_errors

__all__ = [
    "EXIT_DECLINED",
    "EXIT_FATAL",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_RESUMABLE",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_DECLINED = 1
EXIT_PARTIAL = 2
EXIT_RESUMABLE = 3
EXIT_FATAL = 4
EXIT_USAGE = 64

#: command name -> (module, one-line help). A command's module is imported only when its
#: arguments are needed: ``bulkops import`` never loads the server (hypercorn, ~7 MiB).
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("bulkops.cli.transfer", "import a file of contacts onto lists (add or update)"),
    "remove": ("bulkops.cli.remove", "take a file of contacts off lists"),
    "clear": ("bulkops.cli.clear", "remove every member of lists"),
    "sync": ("bulkops.cli.sync", "make a list's members equal a file, sending only what changed"),
    "export": ("bulkops.cli.export", "stream a list or any collection to CSV or JSON Lines"),
    "resume": ("bulkops.cli.resume", "finish an interrupted run"),
    "status": ("bulkops.cli.status", "show what a run has done"),
    "runs": ("bulkops.cli.runs", "list runs (state, counts, age); `runs prune` removes finished"),
    "serve": ("bulkops.server.serve", "serve the Web Services API v1 on a SQLite database"),
    "worker": ("bulkops.server.worker_cli", "run activity workers on a server database, no HTTP"),
    "seed": ("bulkops.server.seed_cli", "fill a server account with realistic, seeded data"),
    "report": ("bulkops.cli.report", "print a campaign's results: counts and rates"),
}


EPILOG = """\
examples:
  bulkops import contacts.csv --list Newsletter --create-lists
  bulkops import contacts.csv --list Newsletter --dry-run
  bulkops sync crm.csv --list Newsletter --remove-missing
  bulkops resume bulkops-runs/contacts-import-20240101-120000
  bulkops status bulkops-runs/contacts-import-20240101-120000
  bulkops export --list Newsletter -o newsletter.csv
  bulkops export lists -o - | head
  bulkops clear --list Newsletter --yes
  bulkops serve --port 8080
  bulkops COMMAND --help           every option of a command

exit codes:
  0   success (imports: every row applied)
  1   a confirmation was declined (clear); nothing was done
  2   finished, but some rows failed, were rejected or were duplicates
  3   stalled or interrupted: `bulkops resume RUN_DIR` finishes it
  4   fatal: authentication, unreadable input, server unreachable
  64  usage error: bad options, arguments or settings

environment:
  BULKOPS_SERVER     the server's root URL (as --server); without it, the embedded
                     local server on $BULKOPS_HOME/server.db, as the demo account
  BULKOPS_USERNAME   the account; with BULKOPS_API_KEY and BULKOPS_PASSWORD (HTTP
                     Basic), or BULKOPS_TOKEN (Bearer); or --credentials-file FILE
  BULKOPS_HOME       where the embedded and `bulkops serve` database lives
                     (default ~/.local/share/bulkops)
  BULKOPS_SERVE_ACCOUNTS, BULKOPS_SERVE_TOKENS
                     accounts and tokens for `bulkops serve` (NAME:PASSWORD:APIKEY,
                     NAME:TOKEN; whitespace-separated)
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def main_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with every command's arguments — or, with ``only``, with that
    command's arguments and the others' names and help lines (their modules not imported)."""
    parser = _Parser(
        prog="bulkops",
        description="Move millions of contacts in and out of a Constant Contact v1 account.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"bulkops {__version__}",
        help="print the version",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def _tune_allocator() -> None:
    """Keep glibc from holding freed MiBs: buffers of 1 MiB and more (chunk bodies of
    4 MiB, read blocks) get their own mappings, returned to the system when freed. glibc's
    default raises this threshold to the largest block freed so far, after which every
    4 MiB body comes from the heap and its pages stay in the process (about 20 MiB of peak
    RSS in a 1M-row import). A no-op where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import platform

        if platform.libc_ver()[0] != "glibc":
            return
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # pragma: no cover - an unusual libc
        return


_M_MMAP_THRESHOLD = -3  # <malloc.h>


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (the first word that is not an option), if it is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``dest`` -> the flag that sets it (the long one), for ``command``'s options."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for option in action.choices[command]._actions:
                if option.option_strings:
                    flags[option.dest] = max(option.option_strings, key=len)
    return flags


_SETTING = re.compile(r"`([a-z_]+)`")


def _in_cli_words(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each backquoted setting that is one of ``flags`` shown as its flag."""
    return _SETTING.sub(lambda m: flags.get(m.group(1), m.group(0)), message)


@contextlib.contextmanager
def _errors_to_exit_codes(codes: list[int], flags: Mapping[str, str]) -> Iterator[None]:
    try:
        # Concurrent tasks report errors as groups; one of ours (or Ctrl-C) is answered as
        # itself, anything else stays a crash with its full traceback.
        with single_errors():
            yield
    except ConfigError as exc:
        print(f"bulkops: {_in_cli_words(str(exc), flags)}", file=sys.stderr)
        codes.append(EXIT_USAGE)
    except ActivityStalled as exc:
        print(f"bulkops: {_in_cli_words(str(exc), flags)} (resumable)", file=sys.stderr)
        codes.append(EXIT_RESUMABLE)
    except BulkOpsError as exc:
        print(f"bulkops: {_in_cli_words(str(exc), flags)}", file=sys.stderr)
        codes.append(EXIT_FATAL)
    except KeyboardInterrupt:
        print("bulkops: interrupted", file=sys.stderr)
        codes.append(EXIT_RESUMABLE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    if argv is None:
        argv = sys.argv[1:]
    _tune_allocator()
    parser = main_parser(_command_of(argv))
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    codes: list[int] = []
    with _errors_to_exit_codes(codes, _flags_of(parser, args.command)):
        codes.append(int(args._run(args)))
    return codes[-1]


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
