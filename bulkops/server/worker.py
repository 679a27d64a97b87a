"""The activity worker: runs bulk activities in the server process, one at a time, durably.

One trio task (:func:`serve_worker`, started by ``serve_api`` from
``state.extras["background"]``) takes unfinished activities in ``seq`` order and drives each
through the lifecycle table of :mod:`bulkops.wire.activity` — every status change is computed
by :func:`~bulkops.wire.activity.next_status` from the status read in the same write
transaction (``BEGIN IMMEDIATE``, so nothing can change it in between).

Invariants:

* **All or nothing.** An add/remove/clear activity's rows are applied in one ``write_tx``
  that also moves it RUNNING → COMPLETE and stores its ``Errors`` and ``TransactionCount``. A
  crash leaves the rows unapplied and the activity RUNNING; on start-up RUNNING activities
  go back to QUEUED (``RECOVER``) and are run again. So an activity is applied exactly once
  or not at all, never half. An export writes ``{id}.csv.tmp`` and renames it into place
  before its COMPLETE commits; running it again just rewrites the file.
* **Set-based SQL.** Rows are validated in Python before the write lock is taken (the
  client's checks: the first problem :func:`~bulkops.wire.columns.row_problem` would name),
  ``executemany``-ed into a TEMP table, then applied with a handful of ``INSERT … SELECT`` /
  ``UPDATE … WHERE id IN`` statements — never one statement per row.
* **The event loop never blocks.** Validation and SQL run in a worker thread through
  :meth:`Store.run`; request handlers keep answering (WAL readers do not wait for the writer).
* **No polling.** The worker sleeps on a :class:`trio.Event` that ``POST /activities`` sets
  (:meth:`Worker.wake`); on start-up it processes whatever is unfinished.
* The ``stall`` fault parks an activity RUNNING for its seconds and lets later activities
  overtake it, as a slow job on a real service would; it is applied when its time is up.

Row rules (spec §7, store docstring): add = upsert by ``(account, lower(email))`` — an empty
cell keeps the stored value — plus membership of every list, Removed → Active, a Do Not Mail
contact is an error row; remove = off the given lists, "not found in subscriber list" when on
none of them, Removed when left on no list; clear = every member off each list. The same
email twice in one ``data``: the last row wins, each earlier one is an error naming it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

from bulkops.server.app import ApiState
from bulkops.server.datafile import (
    ActivityCannotRun,
    ActivityRequest,
    decode_request,
)
from bulkops.server.exports import export_file_path, write_export
from bulkops.server.store import (
    STATUS_ACTIVE,
    STATUS_DO_NOT_MAIL,
    STATUS_REMOVED,
    STATUS_UNCONFIRMED,
    now_ms,
    write_tx,
)
from bulkops.wire.activity import (
    ADD_TYPES,
    ActivityEvent,
    ActivityStatus,
    ActivityType,
    next_status,
)
from bulkops.wire.columns import (
    EMAIL_COLUMN,
    FIELD_LIMITS,
    STATE_CODES,
    email_problem,
    field_problem,
    is_valid_email,
)

__all__ = [
    "ActivityCannotRun",
    "RowError",
    "Worker",
    "WorkerStats",
    "apply_activity",
    "decode_errors",
    "encode_errors",
    "purge_expired",
    "recover_running",
    "register",
    "serve_worker",
    "take_next",
    "worker_for",
]

logger = logging.getLogger("bulkops.server.worker")

#: Seconds between deletions of activities past their retention (their 404 is immediate).
PURGE_INTERVAL = 3600.0

OPT_IN_SOURCE = "ACTION_BY_CUSTOMER"
_EMAIL = EMAIL_COLUMN.field
# Fields whose values are checked beyond their length (and normalised when applied).
_CHECKED_VALUES = frozenset({"StateCode", "EmailType"})
_EMAIL_TYPES = frozenset({"html", "text"})


class RowError(msgspec.Struct, frozen=True, array_like=True):
    """One row the activity did not apply: its ``LineNumber``, address and message."""

    line: int
    email: str
    message: str


_errors_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_errors_decoder = msgspec.msgpack.Decoder(list[RowError])


def encode_errors(errors: Sequence[RowError]) -> bytes:
    """The stored form of an activity's row errors (``activity.errors``)."""
    return _errors_encoder.encode(list(errors))


def decode_errors(blob: bytes | None) -> list[RowError]:
    """Stored row errors back (``[]`` for NULL)."""
    return [] if not blob else _errors_decoder.decode(blob)


@attrs.frozen(kw_only=True)
class WorkerStats:
    """Counters of one worker since it started."""

    recovered: int
    completed: int
    failed: int
    stalled: int


# -- status changes ---------------------------------------------------------------------------


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
            _transition(db, activity_id, ActivityEvent.RECOVER, now, run_start_time=None)
    return len(ids)


def take_next(db: sqlite3.Connection) -> tuple[str, int] | None:
    """Queue every PENDING activity (``ENQUEUE``), then start the oldest QUEUED one.

    Returns:
        ``(activity_id, account_id)`` of the activity now RUNNING, or None when none waits.
    """
    now = now_ms()
    with write_tx(db):
        pending = [
            r[0]
            for r in db.execute(
                "SELECT id FROM activity WHERE status = ? ORDER BY seq",
                (ActivityStatus.PENDING.value,),
            )
        ]
        for activity_id in pending:
            _transition(db, activity_id, ActivityEvent.ENQUEUE, now)
        row = db.execute(
            "SELECT id, account_id FROM activity WHERE status = ? ORDER BY seq LIMIT 1",
            (ActivityStatus.QUEUED.value,),
        ).fetchone()
        if row is None:
            return None
        _transition(db, row[0], ActivityEvent.START, now, run_start_time=now)
        return str(row[0]), int(row[1])


def _fail(db: sqlite3.Connection, activity_id: str) -> None:
    now = now_ms()
    with write_tx(db):
        _transition(db, activity_id, ActivityEvent.FAIL, now, run_finish_time=now, request=None)


def _finish(
    db: sqlite3.Connection,
    activity_id: str,
    count: int,
    errors: Sequence[RowError],
    file_name: str = "",
) -> None:
    """``FINISH`` inside the caller's transaction: COMPLETE with the counts and errors.

    The stored request (up to a few MB) is dropped: a final activity never runs again.
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


# -- applying rows ----------------------------------------------------------------------------


@attrs.frozen
class _Prepared:
    """Rows that passed validation, and the errors of those that did not."""

    fields: tuple[str, ...]  # the Contact fields of ``rows``' columns after the email key
    rows: list[tuple[Any, ...]]  # (email_key, line, EmailAddress, *values)
    errors: list[RowError]


def _prepare(request: ActivityRequest, *, check_fields: bool) -> _Prepared:
    """Validate ``data`` rows (pure): duplicates, overflowing rows, field problems.

    The last row of an email wins; every earlier one is an error naming the line that
    replaced it. With ``check_fields`` (adds) every given field is checked, else only the
    email (removes). Messages are those of :func:`~bulkops.wire.columns.row_problem` (the
    first problem in column order); a fast pre-check decides when to ask for one.
    """
    fields = request.fields
    width = len(fields)
    email_at = fields.index(_EMAIL)
    kept = [
        (i, field, FIELD_LIMITS[field], field in _CHECKED_VALUES)
        for i, field in enumerate(fields)
        if check_fields and field and field != _EMAIL
    ]
    kept_at = [i for i, _field, _limit, _special in kept]
    special = [(n, field) for n, (_i, field, _limit, sp) in enumerate(kept) if sp]
    # Pass 1: trim the cells, and note where each email appears last.
    cleaned: list[tuple[int, list[str], bool]] = []
    last_line: dict[str, int] = {}
    for index, record in enumerate(request.rows):
        if not record:
            continue
        values = [cell.strip() for cell in record]
        overflow = False
        if len(values) < width:
            values.extend([""] * (width - len(values)))
        elif len(values) > width:
            overflow = any(values[width:])
            del values[width:]
        line = index + 2
        cleaned.append((line, values, overflow))
        email = values[email_at]
        if email:
            last_line[email.lower()] = line
    # Pass 2: the verdict on every row.
    errors: list[RowError] = []
    rows: list[tuple[Any, ...]] = []
    for line, values, overflow in cleaned:
        email = values[email_at]
        key = email.lower()
        if email and last_line[key] != line:
            replaced_by = last_line[key]
            message: str | None = (
                f"{email} is repeated on line {replaced_by}, which replaces this row"
            )
        elif overflow:
            message = "the line has more values than the header has columns"
        elif not is_valid_email(email):
            message = email_problem(email)
        else:
            message = None
            for i, field, limit, checked in kept:
                value = values[i]
                if value and (
                    len(value) > limit
                    or (
                        checked
                        and (
                            value.upper() not in STATE_CODES
                            if field == "StateCode"
                            else value.casefold() not in _EMAIL_TYPES
                        )
                    )
                ):
                    message = field_problem(field, value)
                    break
        if message is not None:
            errors.append(RowError(line, email, message))
            continue
        kept_values = [values[i] for i in kept_at]
        for n, field in special:
            kept_values[n] = _normalise(field, kept_values[n])
        rows.append((key, line, email, *kept_values))
    return _Prepared(fields=tuple(field for _i, field, _l, _s in kept), rows=rows, errors=errors)


def _normalise(field: str, value: str) -> str:
    if not value:
        return value
    if field == "StateCode":
        return value.upper()
    if field == "EmailType":
        return "HTML" if value.casefold() == "html" else "Text"
    return value


def _check_lists(db: sqlite3.Connection, account_id: int, list_ids: Sequence[int]) -> None:
    marks = ",".join("?" * len(list_ids))
    found = {
        r[0]
        for r in db.execute(
            f"SELECT id FROM list WHERE account_id = ? AND id IN ({marks})",
            (account_id, *list_ids),
        )
    }
    missing = [str(i) for i in list_ids if i not in found]
    if missing:
        raise ActivityCannotRun(f"list {', '.join(missing)} no longer exists")


def _load_rows(db: sqlite3.Connection, prepared: _Prepared) -> None:
    columns = "".join(f", {field} TEXT NOT NULL" for field in prepared.fields)
    db.execute("DROP TABLE IF EXISTS temp.act_rows")
    db.execute(
        "CREATE TEMP TABLE act_rows (email_key TEXT PRIMARY KEY, line INTEGER NOT NULL, "
        f"EmailAddress TEXT NOT NULL{columns}) WITHOUT ROWID"
    )
    marks = ",".join("?" * (3 + len(prepared.fields)))
    db.executemany(f"INSERT INTO act_rows VALUES ({marks})", prepared.rows)


def _apply_add(
    db: sqlite3.Connection,
    account_id: int,
    request: ActivityRequest,
    prepared: _Prepared,
    now: int,
) -> tuple[int, list[RowError]]:
    errors = prepared.errors
    _check_lists(db, account_id, request.list_ids)
    _load_rows(db, prepared)
    # Do Not Mail is sticky: such rows are errors and are not applied.
    blocked = db.execute(
        "SELECT t.line, t.EmailAddress FROM act_rows t JOIN contact c "
        "ON c.account_id = ? AND c.email_key = t.email_key WHERE c.status = ?",
        (account_id, STATUS_DO_NOT_MAIL),
    ).fetchall()
    if blocked:
        errors = [
            *errors,
            *(
                RowError(line, email, f"{email} is on the Do Not Mail list")
                for line, email in blocked
            ),
        ]
        db.execute(
            "DELETE FROM act_rows WHERE email_key IN (SELECT c.email_key FROM contact c "
            "WHERE c.account_id = ? AND c.status = ? "
            "AND c.email_key IN (SELECT email_key FROM act_rows))",
            (account_id, STATUS_DO_NOT_MAIL),
        )
    fields = prepared.fields
    names = "".join(f", {f}" for f in fields)
    updates = "".join(
        f"{f} = CASE WHEN excluded.{f} <> '' THEN excluded.{f} ELSE contact.{f} END, "
        for f in fields
    )
    contact_ids = sorted(
        r[0]
        for r in db.execute(
            "INSERT INTO contact (account_id, email_key, EmailAddress"
            f"{names}, status, opt_in_source, opt_in_time, insert_time, last_update_time) "
            f"SELECT ?, email_key, EmailAddress{names}, ?, ?, ?, ?, ? FROM act_rows WHERE true "
            "ON CONFLICT (account_id, email_key) DO UPDATE SET "
            f"{updates}"
            "status = CASE WHEN contact.status = ? THEN ? ELSE contact.status END, "
            "last_update_time = excluded.last_update_time RETURNING id",
            (
                account_id,
                STATUS_ACTIVE,
                OPT_IN_SOURCE,
                now,
                now,
                now,
                STATUS_REMOVED,
                STATUS_ACTIVE,
            ),
        )
    )
    # The ids go back in as one JSON array: json_each feeds them at C speed, in id order.
    ids_json = _json_encoder.encode(contact_ids).decode("ascii")
    for list_id in request.list_ids:
        db.execute(
            "INSERT OR IGNORE INTO membership (list_id, contact_id, opt_in_source, opt_in_time) "
            "SELECT ?, value, ?, ? FROM json_each(?)",
            (list_id, OPT_IN_SOURCE, now, ids_json),
        )
    (count,) = db.execute("SELECT count(*) FROM act_rows").fetchone()
    db.execute("DROP TABLE temp.act_rows")
    return int(count), errors


_LEAVE_IF_LISTLESS = (
    "UPDATE contact SET status = CASE WHEN status IN (?, ?) AND NOT EXISTS "
    "(SELECT 1 FROM membership m WHERE m.contact_id = contact.id) THEN ? ELSE status END, "
    "last_update_time = ? WHERE id IN (SELECT contact_id FROM act_found)"
)


def _apply_remove(
    db: sqlite3.Connection,
    account_id: int,
    request: ActivityRequest,
    prepared: _Prepared,
    now: int,
) -> tuple[int, list[RowError]]:
    _check_lists(db, account_id, request.list_ids)
    _load_rows(db, prepared)
    marks = ",".join("?" * len(request.list_ids))
    db.execute("DROP TABLE IF EXISTS temp.act_found")
    db.execute(
        "CREATE TEMP TABLE act_found (contact_id INTEGER PRIMARY KEY, email_key TEXT NOT NULL)"
    )
    db.execute(
        "INSERT INTO act_found SELECT c.id, t.email_key FROM act_rows t JOIN contact c "
        "ON c.account_id = ? AND c.email_key = t.email_key WHERE EXISTS "
        f"(SELECT 1 FROM membership m WHERE m.contact_id = c.id AND m.list_id IN ({marks}))",
        (account_id, *request.list_ids),
    )
    missing = db.execute(
        "SELECT line, EmailAddress FROM act_rows "
        "WHERE email_key NOT IN (SELECT email_key FROM act_found)"
    ).fetchall()
    errors = [
        *prepared.errors,
        *(
            RowError(line, email, f"{email} (not found in subscriber list)")
            for line, email in missing
        ),
    ]
    db.execute(
        f"DELETE FROM membership WHERE list_id IN ({marks}) "
        "AND contact_id IN (SELECT contact_id FROM act_found)",
        tuple(request.list_ids),
    )
    db.execute(_LEAVE_IF_LISTLESS, (STATUS_ACTIVE, STATUS_UNCONFIRMED, STATUS_REMOVED, now))
    (count,) = db.execute("SELECT count(*) FROM act_found").fetchone()
    db.execute("DROP TABLE temp.act_rows")
    db.execute("DROP TABLE temp.act_found")
    return int(count), errors


def _apply_clear(
    db: sqlite3.Connection, account_id: int, request: ActivityRequest, now: int
) -> tuple[int, list[RowError]]:
    _check_lists(db, account_id, request.list_ids)
    marks = ",".join("?" * len(request.list_ids))
    db.execute("DROP TABLE IF EXISTS temp.act_found")
    db.execute("CREATE TEMP TABLE act_found (contact_id INTEGER PRIMARY KEY)")
    db.execute(
        "INSERT OR IGNORE INTO act_found "
        f"SELECT contact_id FROM membership WHERE list_id IN ({marks})",
        tuple(request.list_ids),
    )
    removed = db.execute(
        f"DELETE FROM membership WHERE list_id IN ({marks})", tuple(request.list_ids)
    ).rowcount
    db.execute(_LEAVE_IF_LISTLESS, (STATUS_ACTIVE, STATUS_UNCONFIRMED, STATUS_REMOVED, now))
    db.execute("DROP TABLE temp.act_found")
    return int(removed), []


def apply_activity(
    db: sqlite3.Connection, activity_id: str, account_id: int, request: ActivityRequest
) -> tuple[int, int]:
    """Apply an add, remove or clear activity and complete it, in one transaction.

    The activity must be RUNNING. Returns ``(TransactionCount, number of errors)``.

    Raises:
        ActivityCannotRun: a list is gone (nothing is applied; the caller fails it).
    """
    activity_type = ActivityType(request.type)
    adding = activity_type in ADD_TYPES
    removing = activity_type is ActivityType.REMOVE_CONTACTS_FROM_LISTS
    # Validation is pure: done before the write lock is taken.
    prepared = _prepare(request, check_fields=adding) if adding or removing else None
    now = now_ms()
    with write_tx(db):
        if adding and prepared is not None:
            count, errors = _apply_add(db, account_id, request, prepared, now)
        elif removing and prepared is not None:
            count, errors = _apply_remove(db, account_id, request, prepared, now)
        elif activity_type is ActivityType.CLEAR_CONTACTS_FROM_LISTS:
            count, errors = _apply_clear(db, account_id, request, now)
        else:
            raise ActivityCannotRun(f"{activity_type} is not applied with rows")
        errors.sort(key=lambda e: e.line)
        _finish(db, activity_id, count, errors)
    return count, len(errors)


def _load_request(db: sqlite3.Connection, activity_id: str) -> ActivityRequest:
    row = db.execute("SELECT request FROM activity WHERE id = ?", (activity_id,)).fetchone()
    if row is None or row[0] is None:
        raise ActivityCannotRun(f"activity {activity_id} has no stored request")
    try:
        return decode_request(row[0])
    except msgspec.DecodeError as exc:
        raise ActivityCannotRun(f"activity {activity_id}: unreadable request ({exc})") from None


def _complete_export(db: sqlite3.Connection, activity_id: str, file_name: str, count: int) -> None:
    with write_tx(db):
        _finish(db, activity_id, count, [], file_name)


# -- the worker -------------------------------------------------------------------------------


class Worker:
    """Runs the activities of one server. Get it with :func:`worker_for`.

    Args:
        state: the server state (store, configuration, fault plan in ``extras["faults"]``).
    """

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self._wakeup = trio.Event()
        self._released: list[tuple[str, int]] = []
        self._recovered = 0
        self._completed = 0
        self._failed = 0
        self._stalled = 0
        self._last_purge_ms: int | None = None

    def wake(self) -> None:
        """Tell the worker a new activity may be waiting (safe to call any time)."""
        self._wakeup.set()

    def statistics(self) -> WorkerStats:
        """Counters since the worker started."""
        return WorkerStats(
            recovered=self._recovered,
            completed=self._completed,
            failed=self._failed,
            stalled=self._stalled,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then run activities until cancelled."""
        store = self.state.store
        self._recovered = await store.run(recover_running)
        if self._recovered:
            logger.info("recovered %d interrupted activities", self._recovered)
        await self._maybe_purge()
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wakeup = trio.Event()
                while await self._step(nursery):
                    await self._maybe_purge()
                await self._wakeup.wait()

    async def _step(self, nursery: trio.Nursery) -> bool:
        if self._released:
            activity_id, account_id = self._released.pop(0)
            await self._run(activity_id, account_id)
            return True
        taken = await self.state.store.run(take_next)
        if taken is None:
            return False
        stall = self._stall_seconds()
        if stall > 0:
            self._stalled += 1
            logger.info("fault plan: activity %s stalls for %gs", taken[0], stall)
            nursery.start_soon(self._release_after, taken, stall)
            return True
        await self._run(*taken)
        return True

    def _stall_seconds(self) -> float:
        plan = self.state.extras.get("faults")
        if plan is None:
            return 0.0
        seconds: float = plan.stall_seconds()
        return seconds

    async def _release_after(self, taken: tuple[str, int], seconds: float) -> None:
        await trio.sleep(seconds)
        self._released.append(taken)
        self.wake()

    async def _run(self, activity_id: str, account_id: int) -> None:
        store = self.state.store
        try:
            request = await store.run(_load_request, activity_id)
            if request.export is not None:
                file_name, count = await store.run(
                    write_export, store.data_dir, account_id, activity_id, request.export
                )
                await store.run(_complete_export, activity_id, file_name, count)
            else:
                await store.run(apply_activity, activity_id, account_id, request)
            self._completed += 1
        except ActivityCannotRun as exc:
            logger.warning("activity %s cannot run: %s", activity_id, exc)
            await self._fail(activity_id)
        except Exception:
            logger.exception("activity %s failed", activity_id)
            await self._fail(activity_id)

    async def _fail(self, activity_id: str) -> None:
        self._failed += 1
        try:
            await self.state.store.run(_fail, activity_id)
        except Exception:  # pragma: no cover - the database itself is failing
            logger.exception("cannot mark activity %s as ERROR", activity_id)

    async def _maybe_purge(self) -> None:
        """Delete expired activities, at most once per :data:`PURGE_INTERVAL` (wall clock).

        No timer: it runs when the worker starts and after activities, so an idle server
        arms no deadline (their 404 never waits for this; queries filter by age).
        """
        now = now_ms()
        if self._last_purge_ms is not None and now - self._last_purge_ms < PURGE_INTERVAL * 1000:
            return
        self._last_purge_ms = now
        store = self.state.store
        cutoff = now - int(self.state.config.retention_days * 86_400_000)
        try:
            purged = await store.run(purge_expired, cutoff, store.data_dir)
        except sqlite3.Error:  # pragma: no cover - tried again at the next interval
            logger.exception("purging expired activities failed")
        else:
            if purged:
                logger.info("purged %d activities past their retention", purged)


def worker_for(state: ApiState) -> Worker:
    """The worker of ``state`` (created on first use, kept in ``state.extras["worker"]``)."""
    worker = state.extras.get("worker")
    if not isinstance(worker, Worker):
        worker = Worker(state)
        state.extras["worker"] = worker
    return worker


async def serve_worker(
    state: ApiState, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the activity worker of ``state`` until cancelled (a ``serve_api`` background task).

    In-process tests start it themselves: ``await nursery.start(serve_worker, state)``.
    """
    await worker_for(state).serve(task_status=task_status)


def register(state: ApiState) -> None:
    """Make ``serve_api`` run the worker: add :func:`serve_worker` to the background tasks."""
    background: list[Any] = state.extras.setdefault("background", [])
    if serve_worker not in background:
        background.append(serve_worker)
    worker_for(state)
