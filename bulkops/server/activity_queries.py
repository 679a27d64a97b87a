"""The SQL of activities: the feed and its entries, creation, and the lifecycle's writes.

Every status change is computed by :func:`~bulkops.wire.activity.next_status` from the
status read in the same write transaction (``BEGIN IMMEDIATE``, so nothing can change it in
between). Refusals are domain errors (:mod:`bulkops.server.errors`), never HTTP statuses.

Invariants:

* A new activity is created PENDING, with everything the worker needs in
  ``activity_request``, in one write transaction that also checks the lists exist and the
  queued-activity limit (so concurrent POSTs cannot exceed it).
* A final activity (COMPLETE or ERROR) has no stored request: it never runs again.
* Finished activities last changed before the retention cutoff are invisible to reads at
  once; :func:`purge_expired` deletes them (and their export files) later.
* A RUNNING activity is leased (:mod:`bulkops.server.leases`): ``lease_owner`` and
  ``lease_expires`` are set by :func:`claim_activity`, pushed by :func:`renew_lease` and
  cleared by every way out of RUNNING. Each lease change is computed by
  :func:`~bulkops.server.leases.next_lease` from the row read in the same write transaction.

On PostgreSQL the claim is one statement, with ``SKIP LOCKED`` so that concurrent workers
never wait for each other's candidate row (the ENQUEUE of PENDING rows stays a separate
``UPDATE … WHERE status = 'PENDING'`` before it)::

    WITH next AS (
        SELECT seq, status FROM activity
        WHERE status = 'QUEUED'
           OR (status = 'RUNNING' AND coalesce(lease_expires, 0) <= %(now)s)
        ORDER BY seq LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE activity AS a
    SET status = 'RUNNING', run_start_time = %(now)s, updated = %(now)s,
        lease_owner = %(worker)s, lease_expires = %(now)s + %(lease_ms)s
    FROM next WHERE a.seq = next.seq
    RETURNING a.id, a.account_id, next.status = 'RUNNING' AS reclaimed

and a renewal is ``UPDATE activity SET lease_expires = greatest(lease_expires, %(now)s +
%(lease_ms)s) WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s``
(no row: the lease is lost). The apply's transaction locks its activity row with ``SELECT
status FROM activity WHERE id = %(id)s FOR UPDATE`` just before its FINISH — never at its
start, so that the owner can still renew while it applies.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bulkops.server.datafile import ActivityCannotRun, ActivityRequest, decode_request
from bulkops.server.errors import NotFound, QueueFull
from bulkops.server.exports import export_file_path
from bulkops.server.leases import Claim, Lease, LeaseError, LeaseEvent, LeaseState, next_lease
from bulkops.server.paging import PAGE_SIZE
from bulkops.server.records import ActivityRow, RowError, decode_errors, encode_errors
from bulkops.server.store import now_ms, write_tx
from bulkops.wire.activity import (
    ActivityEvent,
    ActivityStatus,
    ActivityType,
    next_status,
    reported_type,
)

__all__ = [
    "ACTIVITY_ID_PREFIX",
    "COLUMNS",
    "FINAL",
    "activity_errors",
    "activity_page",
    "claim_activity",
    "complete_export",
    "create_activity",
    "expire_leases",
    "fail_activity",
    "finish_activity",
    "get_activity",
    "lease_owners",
    "load_request",
    "new_activity_id",
    "purge_expired",
    "recover_running",
    "release_activity",
    "renew_lease",
    "take_next",
]

#: Every activity id starts with this (spec §7.6), then 14 random lower-case alphanumerics.
ACTIVITY_ID_PREFIX = "a07e1"

#: The statuses of a finished activity.
FINAL = (ActivityStatus.COMPLETE.value, ActivityStatus.ERROR.value)
_UNFINISHED = (
    ActivityStatus.UNCONFIRMED.value,
    ActivityStatus.PENDING.value,
    ActivityStatus.QUEUED.value,
    ActivityStatus.RUNNING.value,
)
#: The columns of an activity row, in the order :func:`activity_page` returns them.
COLUMNS = (
    "seq, id, type, status, error_count, file_name, transaction_count, insert_time, "
    "run_start_time, run_finish_time, updated"
)
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_activity_id() -> str:
    """A fresh activity id: ``a07e1`` + 14 random lower-case letters and digits."""
    return ACTIVITY_ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


# -- the feed and its entries ---------------------------------------------------------------


def activity_page(
    db: sqlite3.Connection,
    account_id: int,
    before: int | None,
    status: str | None,
    activity_type: str | None,
    cutoff: int,
) -> list[ActivityRow]:
    """Up to a page and one of the account's activity rows (the feed's columns), newest first:
    ``seq < before``, filtered by status and (reported or requested) type, without finished
    ones last changed before ``cutoff``."""
    where = ["account_id = ?", "NOT (status IN (?, ?) AND updated < ?)"]
    params: list[Any] = [account_id, *FINAL, cutoff]
    if before is not None:
        where.append("seq < ?")
        params.append(before)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if activity_type is not None:
        where.append("(type = ? OR requested_type = ?)")
        params.extend((activity_type, activity_type))
    sql = (
        f"SELECT {COLUMNS} FROM activity WHERE {' AND '.join(where)} "
        f"ORDER BY seq DESC LIMIT {PAGE_SIZE + 1}"
    )
    return [ActivityRow(*row) for row in db.execute(sql, params)]


def activity_errors(db: sqlite3.Connection, activity_id: str) -> list[RowError]:
    """The row errors of an activity (``[]`` for none or no such activity)."""
    row = db.execute("SELECT errors FROM activity WHERE id = ?", (activity_id,)).fetchone()
    return [] if row is None else decode_errors(row[0])


def get_activity(
    db: sqlite3.Connection, account_id: int, activity_id: str, cutoff: int
) -> tuple[ActivityRow, list[RowError]] | None:
    """An activity row of the account (the feed's columns) and its errors; None when it has
    no such activity, or it finished and was last changed before ``cutoff``."""
    row = db.execute(
        f"SELECT {COLUMNS}, errors FROM activity WHERE id = ? AND account_id = ? "
        "AND NOT (status IN (?, ?) AND updated < ?)",
        (activity_id, account_id, *FINAL, cutoff),
    ).fetchone()
    if row is None:
        return None
    return ActivityRow(*row[:-1]), decode_errors(row[-1])


# -- creation --------------------------------------------------------------------------------


def create_activity(
    db: sqlite3.Connection,
    account_id: int,
    request: ActivityRequest,
    blob: bytes,
    max_queued: int | None,
) -> ActivityRow:
    """Insert a PENDING activity after checking its lists and the queue; return its row.

    Raises:
        NotFound: a list does not exist. QueueFull: ``max_queued`` unfinished already.
    """
    wanted = list(request.list_ids)
    if request.export is not None and request.export.list_id.isdigit():
        wanted.append(int(request.export.list_id))
    now = now_ms()
    activity_type = ActivityType(request.type)
    shown_type = reported_type(activity_type, request.column_count)
    with write_tx(db):
        if wanted:
            marks = ",".join("?" * len(wanted))
            found = {
                r[0]
                for r in db.execute(
                    f"SELECT id FROM list WHERE account_id = ? AND id IN ({marks})",
                    (account_id, *wanted),
                )
            }
            for list_id in wanted:
                if list_id not in found:
                    raise NotFound(f"List {list_id} does not exist")
        if max_queued is not None:
            marks = ",".join("?" * len(_UNFINISHED))
            (unfinished,) = db.execute(
                f"SELECT count(*) FROM activity WHERE account_id = ? AND status IN ({marks})",
                (account_id, *_UNFINISHED),
            ).fetchone()
            if unfinished >= max_queued:
                raise QueueFull(max_queued)
        activity_id = new_activity_id()
        cursor = db.execute(
            "INSERT INTO activity (id, account_id, requested_type, type, status, "
            "insert_time, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                activity_id,
                account_id,
                activity_type.value,
                shown_type.value,
                ActivityStatus.PENDING.value,
                now,
                now,
            ),
        )
        # Apart from the activity row: its status changes then never rewrite the request.
        db.execute(
            "INSERT INTO activity_request (seq, request) VALUES (?, ?)", (cursor.lastrowid, blob)
        )
        row = db.execute(f"SELECT {COLUMNS} FROM activity WHERE id = ?", (activity_id,)).fetchone()
    return ActivityRow(*row)


# -- status changes (the worker) ------------------------------------------------------


def _transition(
    db: sqlite3.Connection,
    activity_id: str,
    event: ActivityEvent,
    now: int,
    **columns: object,
) -> ActivityStatus:
    """Apply ``event`` to one activity inside the caller's write transaction.

    Raises:
        LifecycleError: the table forbids ``event`` in the activity's status.
        ActivityCannotRun: the activity no longer exists.
    """
    row = db.execute("SELECT status FROM activity WHERE id = ?", (activity_id,)).fetchone()
    if row is None:
        raise ActivityCannotRun(f"activity {activity_id} no longer exists")
    old = ActivityStatus(row[0])
    new = next_status(old, event)
    sets = ", ".join(f"{name} = ?" for name in columns)
    sql = f"UPDATE activity SET status = ?, updated = ?{', ' if sets else ''}{sets} WHERE id = ?"
    db.execute(sql, (new.value, now, *columns.values(), activity_id))
    return new


def recover_running(db: sqlite3.Connection) -> int:
    """Put activities left RUNNING by a crash back in the queue (``RECOVER``); how many."""
    now = now_ms()
    with write_tx(db):
        ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM activity WHERE status = ? ORDER BY seq",
                (ActivityStatus.RUNNING.value,),
            )
        ]
        for activity_id in ids:
            _transition(
                db,
                activity_id,
                ActivityEvent.RECOVER,
                now,
                run_start_time=None,
                lease_owner=None,
                lease_expires=None,
            )
    return len(ids)


def take_next(db: sqlite3.Connection) -> tuple[str, int] | None:
    """Queue every PENDING activity (``ENQUEUE``), then start the oldest QUEUED one.

    Without a lease: for tools and tests that run one worker alone. Workers sharing a
    database use :func:`claim_activity` (an unleased RUNNING activity is claimable at once).

    Returns:
        ``(activity_id, account_id)`` of the activity now RUNNING, or None when none waits.
    """
    now = now_ms()
    with write_tx(db):
        _enqueue_pending(db, now)
        row = db.execute(
            "SELECT id, account_id FROM activity WHERE status = ? ORDER BY seq LIMIT 1",
            (ActivityStatus.QUEUED.value,),
        ).fetchone()
        if row is None:
            return None
        _transition(db, row[0], ActivityEvent.START, now, run_start_time=now)
        return str(row[0]), int(row[1])


def _enqueue_pending(db: sqlite3.Connection, now: int) -> None:
    pending = [
        r[0]
        for r in db.execute(
            "SELECT id FROM activity WHERE status = ? ORDER BY seq",
            (ActivityStatus.PENDING.value,),
        )
    ]
    for activity_id in pending:
        _transition(db, activity_id, ActivityEvent.ENQUEUE, now)


_CLAIMABLE = "status = ? OR (status = ? AND coalesce(lease_expires, 0) <= ?)"


def _lease_row(db: sqlite3.Connection, activity_id: str) -> Lease:
    row = db.execute(
        "SELECT status, lease_owner, lease_expires FROM activity WHERE id = ?", (activity_id,)
    ).fetchone()
    if row is None:
        raise ActivityCannotRun(f"activity {activity_id} no longer exists")
    return _lease_of(row[0], row[1], row[2])


def _lease_of(status: str, owner: str | None, expires: int | None) -> Lease:
    if status == ActivityStatus.RUNNING.value:
        return Lease(state=LeaseState.HELD, owner=owner, expires=expires or 0)
    if status in FINAL:
        return Lease(state=LeaseState.DONE)
    return Lease(state=LeaseState.FREE)


def claim_activity(db: sqlite3.Connection, worker_id: str, now: int, lease_ms: int) -> Claim | None:
    """Queue every PENDING activity, then lease the oldest claimable one to ``worker_id``.

    Claimable: QUEUED, or RUNNING under a lease that expired at or before ``now`` (its
    worker died: it goes back through ``RECOVER`` and starts again). One ``BEGIN IMMEDIATE``
    transaction, so two workers never claim the same activity; a read without the write
    lock first, so that an idle worker's poll never blocks writers.

    Returns:
        The :class:`~bulkops.server.leases.Claim`, or None when nothing is claimable.
    """
    queued, running = ActivityStatus.QUEUED.value, ActivityStatus.RUNNING.value
    waiting = db.execute(
        f"SELECT 1 FROM activity WHERE status = ? OR {_CLAIMABLE} LIMIT 1",
        (ActivityStatus.PENDING.value, queued, running, now),
    ).fetchone()
    if waiting is None:
        return None
    with write_tx(db):
        _enqueue_pending(db, now)
        row = db.execute(
            f"SELECT id, account_id, status FROM activity WHERE {_CLAIMABLE} ORDER BY seq LIMIT 1",
            (queued, running, now),
        ).fetchone()
        if row is None:
            return None
        activity_id, account_id, status = str(row[0]), int(row[1]), str(row[2])
        lease = next_lease(
            _lease_row(db, activity_id),
            LeaseEvent.CLAIM,
            worker=worker_id,
            now=now,
            lease_ms=lease_ms,
        )
        reclaimed = status == running
        if reclaimed:
            _transition(db, activity_id, ActivityEvent.RECOVER, now, run_start_time=None)
        _transition(
            db,
            activity_id,
            ActivityEvent.START,
            now,
            run_start_time=now,
            lease_owner=lease.owner,
            lease_expires=lease.expires,
        )
    return Claim(activity_id=activity_id, account_id=account_id, reclaimed=reclaimed)


def renew_lease(
    db: sqlite3.Connection, activity_id: str, worker_id: str, now: int, lease_ms: int
) -> bool:
    """Push the lease of ``worker_id`` on a RUNNING activity to ``now + lease_ms``.

    Returns:
        False when the worker no longer holds it (another claimed it, or it finished).
    """
    with write_tx(db):
        try:
            lease = next_lease(
                _lease_row(db, activity_id),
                LeaseEvent.RENEW,
                worker=worker_id,
                now=now,
                lease_ms=lease_ms,
            )
        except (LeaseError, ActivityCannotRun):
            return False
        db.execute(
            "UPDATE activity SET lease_expires = ? WHERE id = ?", (lease.expires, activity_id)
        )
    return True


def release_activity(db: sqlite3.Connection, activity_id: str, worker_id: str, now: int) -> bool:
    """Give back an unfinished activity ``worker_id`` holds: QUEUED again (``RECOVER``).

    Returns:
        False when the worker did not hold it (nothing changed).
    """
    with write_tx(db):
        try:
            next_lease(
                _lease_row(db, activity_id),
                LeaseEvent.RELEASE,
                worker=worker_id,
                now=now,
                lease_ms=0,
            )
        except (LeaseError, ActivityCannotRun):
            return False
        _transition(
            db,
            activity_id,
            ActivityEvent.RECOVER,
            now,
            run_start_time=None,
            lease_owner=None,
            lease_expires=None,
        )
    return True


def lease_owners(db: sqlite3.Connection) -> list[str]:
    """The workers holding leases on RUNNING activities (expired or not)."""
    return [
        str(r[0])
        for r in db.execute(
            "SELECT DISTINCT lease_owner FROM activity WHERE status = ? "
            "AND lease_owner IS NOT NULL ORDER BY 1",
            (ActivityStatus.RUNNING.value,),
        )
    ]


def expire_leases(db: sqlite3.Connection, owners: Sequence[str]) -> int:
    """Make the leases of ``owners`` (workers known dead) claimable now; how many."""
    if not owners:
        return 0
    marks = ",".join("?" * len(owners))
    with write_tx(db):
        cursor = db.execute(
            f"UPDATE activity SET lease_expires = 0 WHERE status = ? AND lease_owner IN ({marks})",
            (ActivityStatus.RUNNING.value, *owners),
        )
    return cursor.rowcount


def fail_activity(db: sqlite3.Connection, activity_id: str, owner: str | None = None) -> None:
    """``FAIL`` a RUNNING activity (ERROR), dropping its stored request.

    Raises:
        LeaseError: ``owner`` is given and does not hold the activity's lease (another
            worker runs it now: its outcome is that worker's to record).
    """
    now = now_ms()
    with write_tx(db):
        if owner is not None:
            next_lease(
                _lease_row(db, activity_id),
                LeaseEvent.FINISH,
                worker=owner,
                now=now,
                lease_ms=0,
            )
        _transition(
            db,
            activity_id,
            ActivityEvent.FAIL,
            now,
            run_finish_time=now,
            request=None,
            lease_owner=None,
            lease_expires=None,
        )
        _drop_request(db, activity_id)


def finish_activity(
    db: sqlite3.Connection,
    activity_id: str,
    count: int,
    errors: Sequence[RowError],
    file_name: str = "",
) -> None:
    """``FINISH`` inside the caller's transaction: COMPLETE with the counts and errors.

    The stored request (up to a few MB, in ``activity_request``; ``activity.request`` before
    schema version 2) is dropped: a final activity never runs again.
    """
    now = now_ms()
    _transition(
        db,
        activity_id,
        ActivityEvent.FINISH,
        now,
        run_finish_time=now,
        transaction_count=count,
        errors=encode_errors(errors) if errors else None,
        error_count=len(errors),
        file_name=file_name,
        request=None,
        lease_owner=None,
        lease_expires=None,
    )
    _drop_request(db, activity_id)


def _drop_request(db: sqlite3.Connection, activity_id: str) -> None:
    db.execute(
        "DELETE FROM activity_request WHERE seq = (SELECT seq FROM activity WHERE id = ?)",
        (activity_id,),
    )


def purge_expired(db: sqlite3.Connection, cutoff_ms: int, data_dir: Path) -> int:
    """Delete finished activities last changed before ``cutoff_ms``, and their export files."""
    with write_tx(db):
        rows = db.execute(
            "SELECT id, file_name FROM activity WHERE status IN (?, ?) AND updated < ?",
            (ActivityStatus.COMPLETE.value, ActivityStatus.ERROR.value, cutoff_ms),
        ).fetchall()
        db.execute(
            "DELETE FROM activity WHERE status IN (?, ?) AND updated < ?",
            (ActivityStatus.COMPLETE.value, ActivityStatus.ERROR.value, cutoff_ms),
        )
    for activity_id, file_name in rows:
        if file_name:
            export_file_path(data_dir, activity_id, file_name).unlink(missing_ok=True)
    return len(rows)


def load_request(db: sqlite3.Connection, activity_id: str) -> ActivityRequest:
    """The stored request of an activity, for the worker to run.

    Raises:
        ActivityCannotRun: it has none, or it cannot be read.
    """
    row = db.execute(
        "SELECT coalesce(r.request, a.request) FROM activity a "
        "LEFT JOIN activity_request r ON r.seq = a.seq WHERE a.id = ?",
        (activity_id,),
    ).fetchone()
    if row is None or row[0] is None:
        raise ActivityCannotRun(f"activity {activity_id} has no stored request")
    try:
        return decode_request(row[0])
    except msgspec.DecodeError as exc:
        raise ActivityCannotRun(f"activity {activity_id}: unreadable request ({exc})") from None


def complete_export(db: sqlite3.Connection, activity_id: str, file_name: str, count: int) -> None:
    """``FINISH`` an export whose file is in place, in its own transaction."""
    with write_tx(db):
        finish_activity(db, activity_id, count, [], file_name)
