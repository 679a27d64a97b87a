"""``bulkops worker``: activity workers without HTTP, on any machine that reaches the database.

``bulkops worker --db PATH [--concurrency N] [--lease-seconds S] [--poll-interval S]`` runs
one :class:`~bulkops.server.worker.Worker` (``N`` activities at a time) on the database that
``bulkops serve`` processes answer from, until SIGINT or SIGTERM. Any number of them may run
beside the servers' own workers (``bulkops serve --no-worker`` leaves the activities to them):
activities are claimed under leases (:mod:`bulkops.server.leases`), so each runs once, and
one whose worker is killed is run again from the start by another once its lease expires.

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
from bulkops.server.http import ApiState, ServerConfig
from bulkops.server.serve import configure_logging, default_db_path
from bulkops.server.sqlite_storage import SqliteStorage
from bulkops.server.storage import Storage
from bulkops.server.worker import LEASE_SECONDS, POLL_INTERVAL, Worker

__all__ = ["add_arguments", "open_storage", "run", "serve_until_signal"]

logger = logging.getLogger("bulkops.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bulkops worker``'s arguments."""
    parser.add_argument(
        "--db",
        default=None,
        help="the servers' database (default $BULKOPS_HOME/server.db)",
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
    """The store a ``--db`` value names (a SQLite file; default: the embedded server's).

    Raises:
        ConfigError: a database URL, which this build's stores cannot open.
    """
    if db is None:
        return SqliteStorage(default_db_path())
    if "://" in str(db):
        raise ConfigError(f"--db: only SQLite files are supported here, not {str(db)[:12]}…")
    return SqliteStorage(db)


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
