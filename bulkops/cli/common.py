"""What every client command shares: where the server is, who we are, signals, output.

The server: ``--server URL`` or ``BULKOPS_SERVER`` (the server's root; ``…/ws/customers``
or the account's URL are accepted too, and ``http://`` is assumed for a loopback address
without a scheme, ``https://`` for any other). With neither, the **embedded default**: the
API server is started in this process on a loopback port, on the database under
``$BULKOPS_HOME`` (default ``~/.local/share/bulkops``) that ``bulkops serve`` also uses,
with the demo account — so commands work on a fresh machine with nothing else running, and
later commands see the same data.

Credentials never come from flags: ``BULKOPS_USERNAME``, ``BULKOPS_API_KEY`` and
``BULKOPS_PASSWORD`` or ``BULKOPS_TOKEN``, or ``--credentials-file``. Credentials without
a server are refused (they are meant for some server; the embedded one knows only the demo
account), and a credentials file others can read draws a warning.

A request that fails in a way worth retrying prints one line per wait on stderr (what,
why, how long; not with ``--quiet``); a server that cannot be reached at all is given up on
within seconds, anything else after the stall timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bulkops.engine.ledger import ImportReport
from bulkops.engine.progress import JsonReporter, Reporter, make_reporter
from bulkops.engine.report import summary
from bulkops.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a dry run needs neither trio nor httpx
    import trio

    from bulkops.engine.client import Client, ClientConfig, Credentials, RetryNotice

__all__ = [
    "add_confirmation_argument",
    "add_connection_arguments",
    "add_output_arguments",
    "confirm",
    "connect",
    "print_report",
    "run_with_signals",
]

T = TypeVar("T")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--server``, ``--credentials-file``, ``--rate``, ``--daily-quota``."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--server",
        default=os.environ.get("BULKOPS_SERVER"),
        metavar="URL",
        help="the server's root URL, e.g. https://api.constantcontact.com or "
        "127.0.0.1:8080 (default $BULKOPS_SERVER; without either, the embedded local "
        "server as the demo account)",
    )
    group.add_argument(
        "--credentials-file",
        type=Path,
        metavar="FILE",
        help="file of key = value lines: username, api_key, password or token (keep it "
        "private: chmod 600)",
    )
    group.add_argument(
        "--rate", type=float, metavar="R", help="at most this many requests per second"
    )
    group.add_argument(
        "--daily-quota", type=int, metavar="N", help="at most this many requests in this run"
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--quiet``."""
    parser.add_argument(
        "--json", action="store_true", help="print JSON events, one per line, and the report"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def add_confirmation_argument(parser: argparse.ArgumentParser) -> None:
    """``--yes``: skip the question a destructive command asks on a terminal."""
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation (required when stdin is not a terminal)",
    )


def confirm(question: str, *, assume_yes: bool, flag: str = "--yes") -> bool:
    """Ask ``question`` on the terminal; True when the answer is yes.

    With ``assume_yes`` nothing is asked. Without a terminal on stdin there is nobody to
    ask: a :class:`ConfigError` says to add ``flag``.
    """
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} — stdin is not a terminal, so add {flag} to confirm")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


_CREDENTIAL_VARIABLES = ("BULKOPS_USERNAME", "BULKOPS_API_KEY", "BULKOPS_PASSWORD", "BULKOPS_TOKEN")


def _from_file(path: Path) -> Credentials:
    from bulkops.engine.client import Credentials

    credentials = Credentials.from_file(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # pragma: no cover - it was just read
        return credentials
    if mode & 0o077:
        print(
            f"bulkops: warning: the credentials file {path} can be read by others "
            f"(mode {mode:04o}); make it private: chmod 600 {path}",
            file=sys.stderr,
        )
    return credentials


def _credentials(args: argparse.Namespace, *, embedded: bool) -> Credentials:
    from bulkops.engine.client import Credentials

    if embedded:
        given = [name for name in _CREDENTIAL_VARIABLES if os.environ.get(name)]
        if args.credentials_file is not None:
            given.insert(0, "--credentials-file")
        if given:
            raise ConfigError(
                f"credentials are given ({', '.join(given)}) but no server: set "
                "BULKOPS_SERVER or --server to the server they are for (e.g. "
                "https://api.constantcontact.com, or 127.0.0.1:8080 for `bulkops serve`); "
                "to use the embedded local server as the demo account, unset them"
            )
        from bulkops.server.serve import DEMO_ACCOUNT

        return Credentials(
            username=DEMO_ACCOUNT.username,
            api_key=DEMO_ACCOUNT.api_key.value,
            password=DEMO_ACCOUNT.password.value,
        )
    if args.credentials_file is not None:
        return _from_file(args.credentials_file)
    return Credentials.from_env()


def _client_config(args: argparse.Namespace, server: str, *, embedded: bool) -> ClientConfig:
    from bulkops.engine.client import ClientConfig

    stall_timeout = getattr(args, "stall_timeout", None)
    try:
        return ClientConfig(
            server=server,
            credentials=_credentials(args, embedded=embedded),
            rate=args.rate,
            daily_quota=args.daily_quota,
            retry_timeout=stall_timeout if stall_timeout is not None else 600.0,
        )
    except ConfigError as exc:
        if "server URL" in str(exc):
            raise ConfigError(f"--server / BULKOPS_SERVER: {exc}") from None
        raise


def _announce_retries(args: argparse.Namespace, client: Client) -> None:
    """One line on stderr per retry wait, unless ``--quiet`` (stamina's own log is muted)."""
    logging.getLogger("stamina").setLevel(logging.ERROR)
    if getattr(args, "quiet", False):
        return

    def announce(notice: RetryNotice) -> None:
        print(f"bulkops: {notice}", file=sys.stderr, flush=True)

    client.retry_listeners.append(announce)


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[Client]:
    """An open client for the configured server, or for the embedded one.

    Raises:
        ConfigError: a server URL that cannot work, missing credentials, or credentials
            without a server.
    """
    import trio

    from bulkops.engine.client import open_client

    server: str | None = args.server
    if server is not None and not server.strip():
        server = None
    if server:
        config = _client_config(args, server, embedded=False)
        async with open_client(config) as client:
            _announce_retries(args, client)
            yield client
        return
    _credentials(args, embedded=True)  # refused before the server starts
    from bulkops.server.app import ServerConfig
    from bulkops.server.serve import default_db_path, open_state, serve_api

    logging.getLogger("bulkops.server").setLevel(logging.WARNING)
    state = open_state(default_db_path(), ServerConfig())
    try:
        async with trio.open_nursery() as nursery:
            origin = await nursery.start(serve_api, state)
            config = _client_config(args, origin, embedded=True)
            async with open_client(config) as client:
                _announce_retries(args, client)
                yield client
            nursery.cancel_scope.cancel()
    finally:
        state.store.close()


def run_with_signals(
    main: Callable[[trio.Event], Awaitable[T]], reporter: Reporter | None = None
) -> T:
    """Run ``main(stop)`` under trio: the first SIGINT/SIGTERM sets ``stop`` (drain and
    finish what is in flight), the second cancels at once (the run stays resumable)."""
    import trio

    async def wrapper() -> T:
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    count = 0
                    async for _ in signals:
                        count += 1
                        if count == 1:
                            stop.set()
                            print(
                                "bulkops: stopping — finishing activities in flight "
                                "(press Ctrl-C again to quit at once; the run stays resumable)",
                                file=sys.stderr,
                            )
                        else:
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(watch)
                result = await main(stop)
                nursery.cancel_scope.cancel()
        if nursery.cancel_scope.cancelled_caught and "result" not in locals():
            raise KeyboardInterrupt
        return result

    return trio.run(wrapper)


def reporter_for(args: argparse.Namespace, *, stdout_taken: bool = False) -> Reporter:
    """The progress reporter the flags ask for; JSON events go to stderr when stdout
    carries the data (``export -o -``)."""
    if stdout_taken and args.json and not args.quiet:
        return JsonReporter(stream=sys.stderr)
    return make_reporter(json_output=args.json, quiet=args.quiet)


def print_report(args: argparse.Namespace, report: ImportReport) -> int:
    """Print the report (JSON with ``--json``, a summary otherwise); return the exit code."""
    if args.json:
        import msgspec

        print(msgspec.json.encode({"event": "report", "report": report}).decode(), flush=True)
    else:
        print(summary(report), flush=True)
    return report.exit_code
