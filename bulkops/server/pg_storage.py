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
  Claims and the shared rate and quota counters are the exceptions
  (:mod:`~bulkops.server.pg_claims`: ``FOR UPDATE SKIP LOCKED``;
  :mod:`~bulkops.server.pg_throttle`: one counter row locked): a worker looking for work, or
  a request under ``--rate``/``--daily-quota``, never waits for another's apply.

What the one write lock costs, and what a lock per account would take
---------------------------------------------------------------------

The store reuses SQLite's SQL through a string-rewriting adapter
(:mod:`~bulkops.server.pg_dialect`) and maps ``BEGIN IMMEDIATE`` to one global advisory
lock. That keeps every check-then-write of the shared query modules correct without
reading each one for races, at this price with ``--processes 2`` (or more workers):

* **Writes of all accounts are serialized.** A 40,000-row SV_ADD holds the lock for its
  whole apply (about 2 s on the 2-core test machine, benchmarks/README.md "PostgreSQL"), and
  meanwhile every other write waits: another account's apply (two workers apply one
  activity at a time between them), a POST that stores an activity, a list or contact
  created through the API, a failed login's count (``login_failure``, written by
  :mod:`~bulkops.server.auth` in a write transaction). (The rate and quota counters took
  it too, making every throttled request wait for the longest apply, until
  :mod:`~bulkops.server.pg_throttle`.) So a second HTTP process adds read throughput
  (members feeds, exports, searches: readers never take the lock) and no write throughput.
* The adapter costs a regex pass per distinct statement (cached) and a Python-level cursor
  wrapper per call: small beside the round trip; a query that returns a row per row (there
  is none on the hot paths) would pay it per row.

A lock per account (``pg_advisory_xact_lock(WRITE_LOCK_SPACE, account_id)``) would take:
``write_tx`` taking the account (the query modules already receive ``account_id`` on every
path but the worker's claim, purge and lease renewal, which touch activity rows only and
can use row locks, as the claim does); the throttle counters keyed by account (today
``throttle_bucket``/``throttle_day`` are keyed by a name — ``'rate:' + username`` — and the
failed-login buckets by name or client address, which belong to no account: those would
stay on row locks, ``INSERT … ON CONFLICT DO UPDATE … RETURNING``, no advisory lock at all);
campaign ids from a sequence rather than ``max(id) + 1`` (the one check-then-write across
accounts); and a review of each shared check-then-write for what it reads of other
accounts (list-name uniqueness and contact upserts are per account already). With it,
applies of different accounts run side by side, and a throttle decision never waits for an
apply.
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

from bulkops.server import pg_apply, pg_claims, pg_exports, pg_throttle
from bulkops.server.datafile import ActivityRequest, ExportRequest
from bulkops.server.leases import Claim
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


#: The write margin a PostgreSQL store states (:attr:`PgStorage.write_margin_ms`).
PG_WRITE_MARGIN_MS = 1000


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

    @property
    def write_margin_ms(self) -> int:
        """1 s: processes and workers on several hosts may share one PostgreSQL database,
        each stamping with its own clock (kept within a second of the others: NTP)."""
        return PG_WRITE_MARGIN_MS

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

    async def claim_activity(self, worker_id: str, now: int, lease_seconds: float) -> Claim | None:
        """Claim with ``FOR UPDATE SKIP LOCKED``, not under the write lock (:mod:`pg_claims`)."""
        lease_ms = max(1, round(lease_seconds * 1000))
        return await self.run(pg_claims.claim_activity, worker_id, now, lease_ms)

    async def take_token(self, key: str, now: int, rate: float, burst: float) -> bool:
        """A shared rate-limit decision under its counter's row lock (:mod:`pg_throttle`)."""
        return await self.run(pg_throttle.take_token, key, now, rate, burst)

    async def count_request(self, username: str, day: int, quota: int) -> bool:
        """A shared daily-quota decision under its counter's row lock (:mod:`pg_throttle`)."""
        return await self.run(pg_throttle.count_request, username, day, quota)

    async def write_export(
        self, account_id: int, activity_id: str, export: ExportRequest
    ) -> tuple[str, int]:
        return await self.run(
            pg_exports.write_export, self.data_dir, account_id, activity_id, export
        )

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""
