"""The SQL of the shared throttles: token buckets and daily counts that every process sees.

``bulkops serve --processes N`` and several servers on one database must allow together
exactly what one process allows alone, so the counters of :mod:`bulkops.server.throttle`
(``--rate``, ``--daily-quota``) and of the failed-login throttle live in the database. Each
decision is one ``BEGIN IMMEDIATE`` transaction that reads the counter, decides with the
same pure code as the in-memory path (:class:`~bulkops.server.throttle.TokenBucket`), and
writes it back — so concurrent requests in different processes are serialized.

Invariants:

* A bucket row that would be full again is the same as no row: such rows are deleted when a
  new key arrives, so the table holds only the keys seen within one refill period.
* Daily counts are kept for existing accounts only (a request naming no account is answered
  401 anyway and has no quota to use up), and yesterday's rows go when a new key arrives:
  the table holds at most one row per account.
* Times are integer milliseconds of the wall clock (shared by every process of a host).

On PostgreSQL the same decision is one ``INSERT … ON CONFLICT (key) DO UPDATE … RETURNING``
(or ``SELECT … FOR UPDATE`` then ``UPDATE``) in its own transaction.
"""

from __future__ import annotations

import sqlite3

from bulkops.server.store import write_tx
from bulkops.server.throttle import TokenBucket

__all__ = ["count_request", "take_token"]


def take_token(db: sqlite3.Connection, key: str, now: int, rate: float, burst: float) -> bool:
    """Take one token from the bucket of ``key`` at ``now`` (ms); whether there was one.

    The bucket holds at most ``burst`` tokens, starts full and refills at ``rate`` per second
    (:meth:`TokenBucket.take <bulkops.server.throttle.TokenBucket.take>`, the same formula).
    """
    with write_tx(db):
        row = db.execute(
            "SELECT tokens, stamp FROM throttle_bucket WHERE key = ?", (key,)
        ).fetchone()
        bucket = TokenBucket(rate, now / 1000, capacity=burst)
        if row is None:
            # Rows whose bucket is full again carry nothing: drop them as keys come and go.
            refill_ms = int(burst / rate * 1000) + 1
            db.execute("DELETE FROM throttle_bucket WHERE stamp < ?", (now - refill_ms,))
        else:
            bucket.tokens, bucket.stamp = float(row[0]), int(row[1]) / 1000
        taken = bucket.take(now / 1000)
        db.execute(
            "INSERT INTO throttle_bucket (key, tokens, stamp) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp",
            (key, bucket.tokens, max(now, int(row[1]) if row else now)),
        )
    return taken


def count_request(db: sqlite3.Connection, username: str, day: int, quota: int) -> bool:
    """Count one request of account ``username`` on UTC ``day``; False (not counted) when it
    has used ``quota`` already that day. Names of no account are never refused here."""
    with write_tx(db):
        row = db.execute(
            "SELECT day, count FROM throttle_day WHERE key = ?", (username,)
        ).fetchone()
        if row is None:
            known = db.execute("SELECT 1 FROM account WHERE username = ?", (username,)).fetchone()
            if known is None:
                return True
            db.execute("DELETE FROM throttle_day WHERE day < ?", (day,))
        count = 0 if row is None or row[0] != day else int(row[1])
        if count >= quota:
            return False
        db.execute(
            "INSERT INTO throttle_day (key, day, count) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET day = excluded.day, count = excluded.count",
            (username, day, count + 1),
        )
    return True
