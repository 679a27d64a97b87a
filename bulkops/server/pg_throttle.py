"""The shared throttles on PostgreSQL: one counter row locked, never the store's write lock.

:mod:`~bulkops.server.throttle_queries` decides in a ``BEGIN IMMEDIATE`` transaction, which
on PostgreSQL takes the store's one advisory write lock
(:data:`~bulkops.server.pg_dialect.WRITE_LOCK`): every request under ``--rate`` or
``--daily-quota`` would wait for any activity being applied (seconds). Here each decision
locks only its own counter row:

1. ``INSERT … ON CONFLICT DO NOTHING`` makes sure the row exists — inserted *full* (a full
   bucket, a count of 0 for the day), which decides exactly as no row does;
2. ``SELECT … FOR UPDATE`` reads it under a row lock (requests of one key are serialized,
   other keys and every write of the store go on);
3. the same pure code as the in-memory path decides
   (:class:`~bulkops.server.throttle.TokenBucket`), and an ``UPDATE`` stores the result;
   ``COMMIT``.

The invariants of :mod:`~bulkops.server.throttle_queries` hold: rows of buckets full again
are deleted when a new key arrives, daily counts exist for accounts only and yesterday's
go when a new one arrives, times are integer milliseconds of the wall clock.
"""

from __future__ import annotations

from bulkops.server.pg_dialect import PgConnection
from bulkops.server.throttle import TokenBucket

__all__ = ["count_request", "take_token"]


def take_token(db: PgConnection, key: str, now: int, rate: float, burst: float) -> bool:
    """:func:`bulkops.server.throttle_queries.take_token`, with a row lock only."""
    raw = db.raw
    with raw.transaction():
        created = raw.execute(
            "INSERT INTO throttle_bucket (key, tokens, stamp) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING",
            (key, float(burst), now),
        ).rowcount
        if created:
            # Rows whose bucket is full again carry nothing: drop them as keys come and go.
            refill_ms = int(burst / rate * 1000) + 1
            raw.execute(
                "DELETE FROM throttle_bucket WHERE stamp < %s AND key <> %s",
                (now - refill_ms, key),
            )
        row = raw.execute(
            "SELECT tokens, stamp FROM throttle_bucket WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
        assert row is not None  # inserted above or already there, and locked
        bucket = TokenBucket(rate, now / 1000, capacity=burst)
        bucket.tokens, bucket.stamp = float(row[0]), int(row[1]) / 1000
        taken = bucket.take(now / 1000)
        raw.execute(
            "UPDATE throttle_bucket SET tokens = %s, stamp = %s WHERE key = %s",
            (bucket.tokens, max(now, int(row[1])), key),
        )
    return taken


def count_request(db: PgConnection, username: str, day: int, quota: int) -> bool:
    """:func:`bulkops.server.throttle_queries.count_request`, with a row lock only."""
    raw = db.raw
    with raw.transaction():
        known = raw.execute("SELECT 1 FROM account WHERE username = %s", (username,)).fetchone()
        if known is None:
            return True  # names of no account are never refused here (401 anyway)
        created = raw.execute(
            "INSERT INTO throttle_day (key, day, count) VALUES (%s, %s, 0) "
            "ON CONFLICT (key) DO NOTHING",
            (username, day),
        ).rowcount
        if created:
            raw.execute("DELETE FROM throttle_day WHERE day < %s AND key <> %s", (day, username))
        row = raw.execute(
            "SELECT day, count FROM throttle_day WHERE key = %s FOR UPDATE", (username,)
        ).fetchone()
        assert row is not None
        count = 0 if int(row[0]) != day else int(row[1])
        if count >= quota:
            return False
        raw.execute(
            "UPDATE throttle_day SET day = %s, count = %s WHERE key = %s",
            (day, count + 1, username),
        )
    return True
