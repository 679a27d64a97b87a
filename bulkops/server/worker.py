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
  client's checks: the first problem :func:`~bulkops.wire.columns.row_problem` would name;
  a column at a time, see :func:`_prepare`), loaded into a TEMP table a few hundred rows per
  ``INSERT``, then applied with a handful of ``INSERT … SELECT`` / ``UPDATE … WHERE id IN``
  statements — never one statement per row, and none that returns a row per row (each
  ``sqlite3_step`` releases the GIL, and taking it back may wait for a request handler).
* **No checkpoint inside an activity.** Its commit does not checkpoint the WAL (that would
  copy everything it wrote into the database file before it could finish); the worker runs
  a passive checkpoint in another thread afterwards, alongside the next activity.
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
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain, compress, islice
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
    checkpoint_wal,
    now_ms,
    without_autocheckpoint,
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
    EMAIL_MAX_LENGTH,
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
# Most bound parameters per statement when loading rows (SQLite's default limit is 32,766
# since 3.32; a lower compiled-in limit is respected, see _load_rows).
_MAX_PARAMETERS = 8_000

# A fast email pattern, sufficient for is_valid_email: dot-separated atoms of ASCII "atext"
# (no leading, trailing or doubled dot), "@", ASCII labels of at most 62 characters that
# start with a letter or digit, an ASCII alphabetic TLD. Possessive, so it never
# backtracks. What it leaves open — at most 80 characters, no "-." (a label ending in "-")
# — is checked on the whole column. ASCII classes are subsets of the Unicode ones of
# columns._EMAIL_RE, so every address it accepts is valid (tests/test_server_worker.py).
_ATOM = "[A-Za-z0-9" + re.escape("!#$%&'*+/=?^_`{|}~-") + "]++"
_FAST_EMAIL = re.compile(
    rf"{_ATOM}(?:\.{_ATOM})*+@(?:[A-Za-z0-9][A-Za-z0-9\-]{{0,61}}+\.)++[A-Za-z]{{2,63}}+"
)


class RowError(msgspec.Struct, frozen=True, array_like=True):
    """One row the activity did not apply: its ``LineNumber``, address and message."""

    line: int
    email: str
    message: str


_errors_encoder = msgspec.msgpack.Encoder()
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
        _drop_request(db, activity_id)


def _finish(
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


# -- applying rows ----------------------------------------------------------------------------


@attrs.frozen
class _Prepared:
    """Rows that passed validation, and the errors of those that did not.

    The rows are kept by column (``email_key``, ``line``, ``EmailAddress``, then the values
    of ``fields``) and zipped into tuples only while SQLite reads them: no list of
    thousands of tuples for the garbage collector to walk.
    """

    fields: tuple[str, ...]  # the Contact fields of the columns after the email
    columns: tuple[Sequence[Any], ...]  # email_key, line, EmailAddress, *values
    keep: list[bool] | None  # which positions are rows (None: all of them)
    errors: list[RowError]

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """``(email_key, line, EmailAddress, *values)`` of each row, in line order."""
        rows = zip(*self.columns, strict=True)
        return rows if self.keep is None else compress(rows, self.keep)


def _prepare(request: ActivityRequest, *, check_fields: bool) -> _Prepared:
    """Validate ``data`` rows (pure): duplicates, overflowing rows, field problems.

    The last row of an email wins; every earlier one is an error naming the line that
    replaced it. With ``check_fields`` (adds) every given field is checked, else only the
    email (removes). Messages are those of :func:`~bulkops.wire.columns.row_problem` (the
    first problem in column order).

    A column at a time, at C speed (the request stores its cells by column): ``map`` trims
    and measures each column and matches the emails against a fast pattern. These
    checks are *sufficient*: a row none of them flags is certainly fine (the fast email
    pattern implies :func:`~bulkops.wire.columns.is_valid_email`; the length and value checks
    are the exact ones). Flagged rows — usually none — get the exact per-row verdict of
    :func:`_row_message`, which decides.
    """
    fields = request.fields
    email_at = fields.index(_EMAIL)
    kept = [
        (i, field, FIELD_LIMITS[field], field in _CHECKED_VALUES)
        for i, field in enumerate(fields)
        if check_fields and field and field != _EMAIL
    ]
    kept_fields = tuple(field for _i, field, _limit, _special in kept)
    table = request.table()
    columns, lines = table.columns, table.lines
    emails = columns[email_at]
    count = len(emails)
    keys = list(map(str.lower, emails))
    last_line = dict(zip(keys, lines, strict=True))  # the last line of each key wins
    flagged = set(table.overflowing)
    if len(last_line) != count:  # a repeated key (or several empty emails)
        flagged.update(
            at
            for at, (key, line) in enumerate(zip(keys, lines, strict=True))
            if key and last_line[key] != line
        )
    # all() drops each match as it goes: no list of match objects (which the GC tracks).
    if not all(map(_FAST_EMAIL.fullmatch, emails)):
        flagged.update(at for at, email in enumerate(emails) if not _FAST_EMAIL.fullmatch(email))
    if count and (max(map(len, emails)) > EMAIL_MAX_LENGTH or "-." in "\n".join(emails)):
        flagged.update(
            at for at, email in enumerate(emails) if len(email) > EMAIL_MAX_LENGTH or "-." in email
        )
    values: list[Sequence[str]] = []
    for i, field, limit, special in kept:
        column = columns[i]
        if special:
            distinct = set(column)
            bad = {value for value in distinct if _value_refused(field, limit, value)}
            if bad:
                flagged.update(at for at, value in enumerate(column) if value in bad)
            normal = {value: _normalise(field, value) for value in distinct}
            column = list(map(normal.__getitem__, column))
        elif count and max(map(len, column)) > limit:
            flagged.update(at for at, value in enumerate(column) if len(value) > limit)
        values.append(column)
    errors: list[RowError] = []
    keep: list[bool] | None = None
    if flagged:
        keep = [True] * count
        # Only the cells the verdict reads: empty header cells can make a row very wide.
        used = [email_at, *(i for i, _field, _limit, _special in kept)]
        for at in sorted(flagged):
            row = {i: columns[i][at] for i in used}
            message = _row_message(
                row, lines[at], at in table.overflowing, last_line, email_at, kept
            )
            if message is not None:
                errors.append(RowError(lines[at], row[email_at], message))
                keep[at] = False
        if not errors:
            keep = None
    return _Prepared(
        fields=kept_fields, columns=(keys, lines, emails, *values), keep=keep, errors=errors
    )


def _value_refused(field: str, limit: int, value: str) -> bool:
    """Whether the exact check refuses a (stripped) value of ``StateCode`` or ``EmailType``."""
    if not value:
        return False
    if len(value) > limit:
        return True
    if field == "StateCode":
        return value.upper() not in STATE_CODES
    return value.casefold() not in _EMAIL_TYPES


def _row_message(
    values: Mapping[int, str],
    line: int,
    overflow: bool,
    last_line: dict[str, int],
    email_at: int,
    kept: list[tuple[int, str, int, bool]],
) -> str | None:
    """The exact verdict on one row (stripped ``values`` by column): its error message, or None."""
    email = values[email_at]
    key = email.lower()
    if email and last_line[key] != line:
        return f"{email} is repeated on line {last_line[key]}, which replaces this row"
    if overflow:
        return "the line has more values than the header has columns"
    if not is_valid_email(email):
        return email_problem(email)
    for i, field, limit, checked in kept:
        value = values[i]
        if value and (len(value) > limit or (checked and _value_refused(field, limit, value))):
            return field_problem(field, value)
    return None


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
    width = 3 + len(prepared.fields)
    # A SQLite built with a lower SQLITE_MAX_VARIABLE_NUMBER (999 before 3.32) would refuse
    # the statement and fail every activity of more than a few hundred rows.
    limit = min(_MAX_PARAMETERS, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per_statement = max(1, limit // width)
    record = "(" + ",".join("?" * width) + ")"
    rows = prepared.rows()
    # Many rows per statement: one sqlite3_step (one release of the GIL) per batch, not
    # per row. Every release can cost a thread switch while request handlers parse bodies.
    while batch := list(islice(rows, per_statement)):
        sql = f"INSERT INTO act_rows VALUES {','.join([record] * len(batch))}"
        db.execute(sql, tuple(chain.from_iterable(batch)))


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
    # One statement each, no RETURNING: a statement that yields rows releases and takes
    # back the GIL once per row.
    db.execute(
        "INSERT INTO contact (account_id, email_key, EmailAddress"
        f"{names}, status, opt_in_source, opt_in_time, insert_time, last_update_time) "
        f"SELECT ?, email_key, EmailAddress{names}, ?, ?, ?, ?, ? FROM act_rows WHERE true "
        "ON CONFLICT (account_id, email_key) DO UPDATE SET "
        f"{updates}"
        "status = CASE WHEN contact.status = ? THEN ? ELSE contact.status END, "
        "last_update_time = excluded.last_update_time",
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
    for list_id in request.list_ids:
        db.execute(
            "INSERT OR IGNORE INTO membership (list_id, contact_id, opt_in_source, opt_in_time) "
            # CROSS JOIN: look each row up by its email (never scan the account's contacts).
            "SELECT ?, c.id, ?, ? FROM act_rows t CROSS JOIN contact c "
            "ON c.account_id = ? AND c.email_key = t.email_key ORDER BY c.id",
            (list_id, OPT_IN_SOURCE, now, account_id),
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
    db: sqlite3.Connection,
    activity_id: str,
    account_id: int,
    request: ActivityRequest,
    before_commit: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Apply an add, remove or clear activity and complete it, in one transaction.

    The activity must be RUNNING. Returns ``(TransactionCount, number of errors)``.
    ``before_commit`` (tests only: :attr:`Worker.before_commit`) is called with the id once
    the rows are applied, before the activity is completed and committed.

    Raises:
        ActivityCannotRun: a list is gone (nothing is applied; the caller fails it).
    """
    activity_type = ActivityType(request.type)
    adding = activity_type in ADD_TYPES
    removing = activity_type is ActivityType.REMOVE_CONTACTS_FROM_LISTS
    # Validation is pure: done before the write lock is taken.
    prepared = _prepare(request, check_fields=adding) if adding or removing else None
    now = now_ms()
    # The commit of a big activity would run a WAL checkpoint of everything it wrote:
    # the worker starts one in the background afterwards instead (Worker._start_checkpoint).
    with without_autocheckpoint(db), write_tx(db):
        if adding and prepared is not None:
            count, errors = _apply_add(db, account_id, request, prepared, now)
        elif removing and prepared is not None:
            count, errors = _apply_remove(db, account_id, request, prepared, now)
        elif activity_type is ActivityType.CLEAR_CONTACTS_FROM_LISTS:
            count, errors = _apply_clear(db, account_id, request, now)
        else:
            raise ActivityCannotRun(f"{activity_type} is not applied with rows")
        errors.sort(key=lambda e: e.line)
        if before_commit is not None:
            before_commit(activity_id)
        _finish(db, activity_id, count, errors)
    return count, len(errors)


def _load_request(db: sqlite3.Connection, activity_id: str) -> ActivityRequest:
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
        self._checkpointing = False
        #: Tests only (None in production): called in the worker's thread with the id of a
        #: RUNNING add/remove/clear activity whose rows are applied and not yet committed.
        self.before_commit: Callable[[str], None] | None = _hold_from_environment()

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
            self._start_checkpoint(nursery)
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
        self._start_checkpoint(nursery)
        return True

    def _start_checkpoint(self, nursery: trio.Nursery) -> None:
        """Checkpoint the WAL in another thread while the next activity runs (one at a time)."""
        if not self._checkpointing:
            self._checkpointing = True
            nursery.start_soon(self._checkpoint)

    async def _checkpoint(self) -> None:
        try:
            await self.state.store.run(checkpoint_wal)
        except sqlite3.Error:  # pragma: no cover - tried again after the next activity
            logger.exception("checkpointing the WAL failed")
        finally:
            self._checkpointing = False

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
                await store.run(
                    apply_activity, activity_id, account_id, request, self.before_commit
                )
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


def _hold_from_environment() -> Callable[[str], None] | None:
    """Tests only: with ``BULKOPS_TEST_HOLD_FILE=path`` the worker writes a RUNNING activity's
    id to ``path`` before its commit and waits while the file exists (tests/test_server_crash.py
    kills the server there). Unset in production: no hook."""
    name = os.environ.get("BULKOPS_TEST_HOLD_FILE")
    if not name:
        return None
    path = Path(name)

    def hold(activity_id: str) -> None:
        path.write_text(activity_id)
        while path.exists():
            time.sleep(0.01)

    return hold


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
