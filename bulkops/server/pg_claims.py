"""Claiming activities on PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``, no write lock.

:func:`bulkops.server.activity_queries.claim_activity` claims inside a write transaction,
which on PostgreSQL holds the store's one advisory write lock
(:data:`~bulkops.server.pg_dialect.WRITE_LOCK`): a worker looking for work would wait for
another worker's whole apply (seconds) before it could even claim. Here a claim is two
single statements, each its own transaction, that take row locks only:

1. ``ENQUEUE``: every PENDING activity becomes QUEUED (one ``UPDATE``; only when there is
   one, found by a read first, so an idle worker's poll writes nothing);
2. the claim: the oldest QUEUED row is locked with ``FOR UPDATE SKIP LOCKED`` (two workers
   never wait for, nor take, the same candidate) and set RUNNING under the caller's lease.
   When some RUNNING activity's lease expired at or before ``now`` (its worker died or
   stalled) the oldest of both kinds is claimed instead, the same way but under the write
   lock (:data:`RECLAIM`): the stalled owner may yet release or fail it, and checks its
   ownership under that lock before it writes.

The statuses and the lease come from the same tables as on SQLite: ``QUEUED --START-->
RUNNING``, an expired ``RUNNING --RECOVER--> QUEUED --START--> RUNNING``
(:func:`~bulkops.wire.activity.next_status`), ``expires = now + lease_ms``
(:func:`~bulkops.server.leases.next_lease`); they are computed at import and checked there,
so the SQL cannot drift from the tables. An apply still in progress under an expired lease
is safe: its commit and the new owner's both lock the activity row before FINISH, and the
second finds it COMPLETE (``tests/test_server_leases.py``).
"""

from __future__ import annotations

from bulkops.server.leases import Claim, Lease, LeaseEvent, LeaseState, next_lease
from bulkops.server.pg_dialect import WRITE_LOCK, PgConnection
from bulkops.wire.activity import ActivityEvent, ActivityStatus, next_status

__all__ = ["CLAIM", "ENQUEUE", "RECLAIM", "claim_activity"]

_PENDING = ActivityStatus.PENDING
_QUEUED = next_status(_PENDING, ActivityEvent.ENQUEUE)
_RUNNING = next_status(_QUEUED, ActivityEvent.START)
if next_status(
    next_status(_RUNNING, ActivityEvent.RECOVER), ActivityEvent.START
) is not _RUNNING or next_lease(
    Lease(state=LeaseState.FREE), LeaseEvent.CLAIM, worker="w", now=1, lease_ms=2
) != Lease(state=LeaseState.HELD, owner="w", expires=3):  # pragma: no cover - a table changed
    raise RuntimeError("pg_claims.CLAIM no longer follows the lifecycle or lease table")

#: PENDING → QUEUED, all at once.
ENQUEUE = (
    f"UPDATE activity SET status = '{_QUEUED.value}', updated = %(now)s "
    f"WHERE status = '{_PENDING.value}'"
)

_EXPIRED = f"(status = '{_RUNNING.value}' AND coalesce(lease_expires, 0) <= %(now)s)"


def _claim(where: str) -> str:
    return f"""
WITH next AS (
    SELECT seq, status FROM activity WHERE {where}
    ORDER BY seq LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE activity AS a
SET status = '{_RUNNING.value}', run_start_time = %(now)s, updated = %(now)s,
    lease_owner = %(worker)s, lease_expires = %(now)s + %(lease_ms)s
FROM next WHERE a.seq = next.seq
RETURNING a.id, a.account_id, next.status = '{_RUNNING.value}'
"""


#: The claim of the oldest QUEUED activity (no write lock: nobody else owns it).
CLAIM = _claim(f"status = '{_QUEUED.value}'")

#: The claim of the oldest QUEUED or expired RUNNING activity, run under the write lock: the
#: expired lease's owner may still be running and, releasing or failing the activity, checks
#: that it owns it before it writes — under the write lock, which this claim then waits for.
RECLAIM = _claim(f"status = '{_QUEUED.value}' OR {_EXPIRED}")

# (pending?, expired?) of the claimable rows, or no row when there is nothing to do.
_WAITING = (
    f"SELECT bool_or(status = '{_PENDING.value}'), bool_or({_EXPIRED}) FROM activity "
    f"WHERE status IN ('{_PENDING.value}', '{_QUEUED.value}') OR {_EXPIRED} "
    "HAVING count(*) > 0"
)


def claim_activity(db: PgConnection, worker_id: str, now: int, lease_ms: int) -> Claim | None:
    """Queue every PENDING activity, then lease the oldest claimable one to ``worker_id``
    (as :func:`bulkops.server.activity_queries.claim_activity`, without the write lock).

    Returns:
        The :class:`~bulkops.server.leases.Claim`, or None when nothing is claimable.
    """
    raw = db.raw  # autocommit: each statement below is a transaction of its own
    params = {"now": now, "worker": worker_id, "lease_ms": lease_ms}
    waiting = raw.execute(_WAITING.encode(), params).fetchone()
    if waiting is None:
        return None
    pending, expired = waiting
    if pending:
        raw.execute(ENQUEUE.encode(), params)
    if expired:  # rare: a worker died (or stalled) holding an activity
        with raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            row = raw.execute(RECLAIM.encode(), params).fetchone()
    else:
        row = raw.execute(CLAIM.encode(), params).fetchone()
    if row is None:
        return None
    return Claim(activity_id=str(row[0]), account_id=int(row[1]), reclaimed=bool(row[2]))
