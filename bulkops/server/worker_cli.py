"""``bulkops worker``: activity workers without HTTP, on any machine that reaches the database.

``bulkops worker [--db PATH|URL] [--concurrency N] [--lease-seconds S] [--poll-interval S]`` runs
one :class:`~bulkops.server.worker.Worker` (``N`` activities at a time) on the database that
``bulkops serve`` processes answer from, until SIGINT or SIGTERM: a SQLite file on the same
machine, or a PostgreSQL database (``--db postgresql://USER@HOST:PORT/DBNAME`` or
``BULKOPS_DB``; the password from ``PGPASSWORD``, ``~/.pgpass`` or ``BULKOPS_DB``, never
argv, which ``ps`` shows). Any number of them may run beside the servers' own workers
(``bulkops serve --no-worker`` leaves the activities to them): activities are claimed under
leases (:mod:`bulkops.server.leases`), so each runs once, and one whose worker is killed
is run again from the start by another once its lease expires.

On SIGINT/SIGTERM the worker stops claiming, lets the activities it is applying commit (an
apply cannot be interrupted halfway: it is one transaction), gives back the ones it holds
unfinished, and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import trio

from bulkops.errors import ConfigError
from bulkops.server import serve
from bulkops.server.http import ApiState, ServerConfig
from bulkops.server.serve import configure_logging
from bulkops.server.storage import Storage
from bulkops.server.worker import LEASE_SECONDS, POLL_INTERVAL, Worker

__all__ = ["add_arguments", "open_storage", "run", "serve_until_signal"]

logger = logging.getLogger("bulkops.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bulkops worker``'s arguments."""
    parser.add_argument(
        "--db",
        default=None,
        help="the servers' database: a SQLite file or postgresql://USER@HOST:PORT/DBNAME"
        " (password from PGPASSWORD or ~/.pgpass); default $BULKOPS_DB, else"
        " $BULKOPS_HOME/server.db",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="activities run at once (default %(default)s)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=LEASE_SECONDS,
        metavar="S",
        help="an activity whose worker stops renewing its lease this long is run again by"
        " another (default %(default)s)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        metavar="S",
        help="seconds between looks for new activities (default %(default)s)",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=ServerConfig().retention_days,
        help="finished activities are purged after this long (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much the worker logs (default %(default)s)",
    )


def open_storage(db: str | Path | None) -> Storage:
    """The store a ``--db`` value names, resolved as ``bulkops serve`` resolves it
    (:func:`bulkops.server.serve.resolve_db`): a ``postgresql://`` URL, a SQLite path, else
    ``$BULKOPS_DB``, else the embedded server's database.

    Raises:
        ConfigError: a value that is neither a path nor a ``postgresql://`` URL.
    """
    try:
        return serve.open_storage(serve.resolve_db(None if db is None else str(db)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops worker`` until SIGINT or SIGTERM."""
    configure_logging(args.log_level)
    if args.concurrency < 1 or not args.lease_seconds > 0 or not args.poll_interval > 0:
        raise ConfigError("--concurrency, --lease-seconds and --poll-interval must be positive")
    store = open_storage(args.db)
    state = ApiState(store=store, config=ServerConfig(retention_days=args.retention_days))
    worker = Worker(
        state,
        concurrency=args.concurrency,
        lease_seconds=args.lease_seconds,
        poll_interval=args.poll_interval,
    )
    try:
        trio.run(serve_until_signal, worker)
    finally:
        store.close()
    return 0


async def serve_until_signal(worker: Worker) -> None:
    """Run ``worker`` until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            logger.info(
                "worker %s running %d activities at a time (db %s)",
                worker.worker_id,
                worker.concurrency,
                worker.state.store.location,
            )
            async for signum in signals:
                logger.info("received %s, stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    stats = worker.statistics()
    logger.info(
        "worker %s stopped: %d completed, %d failed, %d taken over",
        worker.worker_id,
        stats.completed,
        stats.failed,
        stats.recovered,
    )
