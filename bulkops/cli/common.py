"""What every client command shares: where the server is, who we are, signals, output.

The server: ``--server URL`` or ``BULKOPS_SERVER`` (the server's root; the account path
comes from the username). With neither, the **embedded default**: the API server is started
in this process on a loopback port, on the database under ``$BULKOPS_HOME`` (default
``~/.local/share/bulkops``) that ``bulkops serve`` also uses, with the demo account — so
commands work on a fresh machine with nothing else running, and later commands see the
same data.

Credentials never come from flags: ``BULKOPS_USERNAME``, ``BULKOPS_API_KEY`` and
``BULKOPS_PASSWORD`` or ``BULKOPS_TOKEN``, or ``--credentials-file``. The embedded server
uses the demo account unless those are set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from bulkops.engine.client import Client, ClientConfig, Credentials, open_client
from bulkops.engine.ledger import ImportReport
from bulkops.engine.progress import Reporter, make_reporter
from bulkops.engine.report import summary

__all__ = [
    "add_connection_arguments",
    "add_output_arguments",
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
        help="the server's root URL, e.g. https://api.constantcontact.com (default "
        "$BULKOPS_SERVER; without either, the embedded local server)",
    )
    group.add_argument(
        "--credentials-file",
        type=Path,
        help="file of key = value lines: username, api_key, password or token",
    )
    group.add_argument("--rate", type=float, help="at most this many requests per second")
    group.add_argument("--daily-quota", type=int, help="at most this many requests in this run")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--quiet``."""
    parser.add_argument(
        "--json", action="store_true", help="print JSON events, one per line, and the report"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _credentials(args: argparse.Namespace, *, embedded: bool) -> Credentials:
    if args.credentials_file is not None:
        return Credentials.from_file(args.credentials_file)
    env = os.environ
    if embedded and not env.get("BULKOPS_USERNAME"):
        from bulkops.server.serve import DEMO_ACCOUNT

        return Credentials(
            username=DEMO_ACCOUNT.username,
            api_key=DEMO_ACCOUNT.api_key.value,
            password=DEMO_ACCOUNT.password.value,
        )
    return Credentials.from_env()


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[Client]:
    """An open client for the configured server, or for the embedded one."""
    server: str | None = args.server
    if server:
        config = ClientConfig(
            server=server,
            credentials=_credentials(args, embedded=False),
            rate=args.rate,
            daily_quota=args.daily_quota,
        )
        async with open_client(config) as client:
            yield client
        return
    from bulkops.server.app import ServerConfig
    from bulkops.server.serve import default_db_path, open_state, serve_api

    logging.getLogger("bulkops.server").setLevel(logging.WARNING)
    state = open_state(default_db_path(), ServerConfig())
    try:
        async with trio.open_nursery() as nursery:
            origin = await nursery.start(serve_api, state)
            config = ClientConfig(
                server=origin,
                credentials=_credentials(args, embedded=True),
                rate=args.rate,
                daily_quota=args.daily_quota,
            )
            async with open_client(config) as client:
                yield client
            nursery.cancel_scope.cancel()
    finally:
        state.store.close()


def run_with_signals(
    main: Callable[[trio.Event], Awaitable[T]], reporter: Reporter | None = None
) -> T:
    """Run ``main(stop)`` under trio: the first SIGINT/SIGTERM sets ``stop`` (drain and
    finish what is in flight), the second cancels at once (the run stays resumable)."""

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


def reporter_for(args: argparse.Namespace) -> Reporter:
    """The progress reporter the flags ask for."""
    return make_reporter(json_output=args.json, quiet=args.quiet)


def print_report(args: argparse.Namespace, report: ImportReport) -> int:
    """Print the report (JSON with ``--json``, a summary otherwise); return the exit code."""
    if args.json:
        import msgspec

        print(msgspec.json.encode({"event": "report", "report": report}).decode(), flush=True)
    else:
        print(summary(report), flush=True)
    return report.exit_code
