"""The ``bulkops`` command line: ``main(argv) -> int``.

Each command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them together and turns the error tree into
messages and exit codes, in one place.

Exit codes:

* 0  — success (for imports: every row applied)
* 2  — finished, but some rows failed, were rejected or were duplicates
* 3  — stalled or interrupted; the run can be resumed
* 4  — fatal: authentication, unreadable input, server unreachable after retries
* 64 — usage error
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence

from bulkops._version import __version__
from bulkops.errors import ActivityStalled, BulkOpsError, ConfigError, single_errors

__all__ = ["EXIT_FATAL", "EXIT_OK", "EXIT_PARTIAL", "EXIT_RESUMABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_PARTIAL = 2
EXIT_RESUMABLE = 3
EXIT_FATAL = 4
EXIT_USAGE = 64

#: command name -> (module, one-line help). A command's module is imported only when its
#: arguments are needed: ``bulkops import`` never loads the server (hypercorn, ~7 MiB).
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("bulkops.cli.transfer", "add or update a file of contacts on lists"),
    "remove": ("bulkops.cli.remove", "take a file of contacts off lists"),
    "clear": ("bulkops.cli.clear", "remove every member of lists"),
    "export": ("bulkops.cli.export", "stream a list or any collection to CSV or JSON Lines"),
    "resume": ("bulkops.cli.resume", "finish an interrupted run"),
    "status": ("bulkops.cli.status", "show what a run has done"),
    "serve": ("bulkops.server.serve", "serve the Web Services API v1 on a SQLite database"),
    "worker": ("bulkops.server.worker_cli", "run activity workers on a server database, no HTTP"),
    "seed": ("bulkops.server.seed_cli", "fill a server account with realistic, seeded data"),
    "report": ("bulkops.cli.report", "print a campaign's results: counts and rates"),
}


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
    )
    parser.add_argument("--version", action="version", version=f"bulkops {__version__}")
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


@contextlib.contextmanager
def _errors_to_exit_codes(codes: list[int]) -> Iterator[None]:
    try:
        # Concurrent tasks report errors as groups; one of ours (or Ctrl-C) is answered as
        # itself, anything else stays a crash with its full traceback.
        with single_errors():
            yield
    except ConfigError as exc:
        print(f"bulkops: {exc}", file=sys.stderr)
        codes.append(EXIT_USAGE)
    except ActivityStalled as exc:
        print(f"bulkops: {exc} (resumable)", file=sys.stderr)
        codes.append(EXIT_RESUMABLE)
    except BulkOpsError as exc:
        print(f"bulkops: {exc}", file=sys.stderr)
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
    with _errors_to_exit_codes(codes):
        codes.append(int(args._run(args)))
    return codes[-1]


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
