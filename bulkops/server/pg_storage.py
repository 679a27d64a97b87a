"""The PostgreSQL implementation of :class:`~bulkops.server.storage.Storage`.

:class:`PgStorage` runs the same query modules as
:class:`~bulkops.server.sqlite_storage.SqliteStorage` — it inherits its query dispatch and
replaces the connections under it — through :class:`~bulkops.server.pg_dialect.PgConnection`
on a psycopg 3 connection pool. Queries run in trio worker threads (psycopg's async API is
asyncio-only), bounded by a limiter of the pool's size, so the event loop never waits.

Invariants:

* **Secrets stay out.** The URL's password (prefer ``PGPASSWORD`` or ``~/.pgpass``) is
  handed to libpq only: :attr:`PgStorage.location` and ``repr`` show the URL without it.
* Opening the store migrates the schema (:mod:`~bulkops.server.pg_schema`), once, under
  an advisory lock, whatever the number of processes starting together.
* Every write transaction holds the store's write lock
  (:data:`~bulkops.server.pg_dialect.WRITE_LOCK`), as SQLite's single writer would, so
  each activity is applied all or nothing and check-then-write requests see one state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import trio
from psycopg_pool import ConnectionPool

from bulkops.server import pg_apply, pg_exports
from bulkops.server.datafile import ActivityRequest, ExportRequest
from bulkops.server.pg_dialect import PgConnection, configure
from bulkops.server.pg_schema import migrate
from bulkops.server.sqlite_storage import SqliteStorage

__all__ = ["PgStorage", "redact"]

T = TypeVar("T")


def redact(url: str) -> str:
    """``url`` without its password, in the netloc or the query (for logs and reprs)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class PgStorage(SqliteStorage):
    """:class:`~bulkops.server.storage.Storage` on a PostgreSQL database (migrated on open).

    Args:
        url: ``postgresql://USER[:PASS]@HOST:PORT/DBNAME`` (libpq also reads ``PGPASSWORD``,
            ``~/.pgpass`` and the other ``PG*`` variables).
        data_dir: where export files go (``data_dir/exports``).
        max_threads: pooled connections, and worker threads that may run queries at once.
    """

    def __init__(self, url: str, *, data_dir: str | Path, max_threads: int = 8) -> None:
        self._url = url
        self._location = redact(url)
        self.path = Path(data_dir)
        self.data_dir = Path(data_dir)
        self._limiter = trio.CapacityLimiter(max_threads)
        self._closed = False
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_threads,
            configure=configure,
            open=True,
            name="bulkops",
        )
        self._local = threading.local()
        self._direct: list[psycopg.Connection[Any]] = []
        self._direct_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PgStorage({self._location!r})"

    @property
    def location(self) -> str:
        """The database's URL, without its password."""
        return self._location

    def connection(self) -> PgConnection:  # type: ignore[override]
        """This thread's own connection (outside the pool), for setup code and tests."""
        conn: PgConnection | None = getattr(self._local, "db", None)
        if conn is None:
            raw = psycopg.connect(self._url, autocommit=True)
            configure(raw)
            conn = PgConnection(raw)
            self._local.db = conn
            with self._direct_lock:
                self._direct.append(raw)
        return conn

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(connection, *args)`` on a pooled connection in a worker thread."""
        return await trio.to_thread.run_sync(self._call, fn, args, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        with self._pool.connection() as raw:
            return fn(PgConnection(raw), *args)

    def close(self) -> None:
        """Close the pool and the direct connections (once serving has stopped)."""
        self._closed = True
        self._pool.close()
        with self._direct_lock:
            direct, self._direct = self._direct, []
        for raw in direct:
            with contextlib.suppress(psycopg.Error):
                raw.close()
        self._local = threading.local()

    # -- what differs from SQLite --------------------------------------------------------

    async def apply_activity(
        self,
        activity_id: str,
        account_id: int,
        request: ActivityRequest,
        before_commit: Callable[[str], None] | None = None,
    ) -> tuple[int, int]:
        return await self.run(
            pg_apply.apply_activity, activity_id, account_id, request, before_commit
        )

    async def write_export(
        self, account_id: int, activity_id: str, export: ExportRequest
    ) -> tuple[str, int]:
        return await self.run(
            pg_exports.write_export, self.data_dir, account_id, activity_id, export
        )

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""
