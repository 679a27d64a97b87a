"""Applying an add, remove or clear activity: validation, then set-based SQL, all or nothing.

Invariants:

* **All or nothing.** An add/remove/clear activity's rows are applied in one ``write_tx``
  that also moves it RUNNING → COMPLETE and stores its ``Errors`` and ``TransactionCount``. A
  crash leaves the rows unapplied and the activity RUNNING; on start-up RUNNING activities
  go back to QUEUED (``RECOVER``) and are run again. So an activity is applied exactly once
  or not at all, never half.
* **Set-based SQL.** Rows are validated in Python before the write lock is taken (the
  client's checks: the first problem :func:`~bulkops.wire.columns.row_problem` would name;
  a column at a time, see :func:`_prepare`), loaded into a TEMP table a few hundred rows per
  ``INSERT``, then applied with a handful of ``INSERT … SELECT`` / ``UPDATE … WHERE id IN``
  statements — never one statement per row, and none that returns a row per row (each
  ``sqlite3_step`` releases the GIL, and taking it back may wait for a request handler).
* **O(rows), never O(account).** Every join of ``act_rows`` with ``contact`` looks each
  row up by its email (``CROSS JOIN contact``: SQLite keeps that join order), and the
  planner is told the table's size (``ANALYZE temp.act_rows``): no plan walks the
  account's contacts, whether or not the database has statistics
  (tests/test_server_worker.py counts the virtual machine's steps).
* **No checkpoint inside an activity.** Its commit does not checkpoint the WAL (that would
  copy everything it wrote into the database file before it could finish); the worker runs
  a passive checkpoint in another thread afterwards, alongside the next activity.

Row rules (spec §7, store docstring): add = upsert by ``(account, lower(email))`` — the
address takes the row's spelling, an empty cell keeps the stored value — plus membership of
every list, Removed → Active, a Do Not Mail contact is an error row; remove = off the given
lists, "not found in subscriber list" when on none of them, Removed when left on no list;
clear = every member off each list. The same email twice in one ``data``: the last row wins,
each earlier one is an error naming it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain, compress, islice
from typing import Any

import attrs

from bulkops.server.activity_queries import finish_activity
from bulkops.server.datafile import ActivityCannotRun, ActivityRequest
from bulkops.server.records import RowError
from bulkops.server.store import (
    STATUS_ACTIVE,
    STATUS_DO_NOT_MAIL,
    STATUS_REMOVED,
    STATUS_UNCONFIRMED,
    bump_write_seq,
    now_ms,
    without_autocheckpoint,
    write_tx,
)
from bulkops.wire.activity import ADD_TYPES, ActivityType
from bulkops.wire.columns import (
    CONTROL_RE,
    EMAIL_COLUMN,
    EMAIL_MAX_LENGTH,
    FIELD_LIMITS,
    STATE_CODES,
    column_for_field,
    control_problem,
    email_problem,
    field_problem,
    is_valid_email,
)

__all__ = ["OPT_IN_SOURCE", "apply_activity"]

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


# -- validating rows ----------------------------------------------------------------------------


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
        if count and CONTROL_RE.search("\n".join(column)):  # LF is no control character
            flagged.update(at for at, value in enumerate(column) if CONTROL_RE.search(value))
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
        control = control_problem(value)
        if control is not None:
            return f"{_label(field)} {control}"
        if value and (len(value) > limit or (checked and _value_refused(field, limit, value))):
            return field_problem(field, value)
    return None


def _label(field: str) -> str:
    """The column name of an activity field, as messages name it."""
    try:
        return column_for_field(field).name
    except KeyError:
        return field


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


#: Fills the temporary table ``act_rows`` (email_key, line, EmailAddress, *fields).
RowLoader = Callable[[Any, "_Prepared"], None]


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
    # Tell the planner how many rows there are (O(rows), well under a millisecond). Without
    # statistics it takes a table for 2^20 rows, and once the database has some (ANALYZE,
    # PRAGMA optimize) it then finds it cheaper to build a Bloom filter of every contact of
    # the account before each join with act_rows than to look the rows up: O(account),
    # ~0.2 s per statement on a 1 M-contact account (benchmarks/README.md, "sv-remove").
    db.execute("ANALYZE temp.act_rows")


def _apply_add(
    db: sqlite3.Connection,
    account_id: int,
    request: ActivityRequest,
    prepared: _Prepared,
    now: int,
    load_rows: RowLoader,
) -> tuple[int, list[RowError]]:
    errors = prepared.errors
    _check_lists(db, account_id, request.list_ids)
    load_rows(db, prepared)
    # Do Not Mail is sticky: such rows are errors and are not applied. CROSS JOIN (here and
    # below): each row looked up by its email, never the account's opted-out contacts
    # walked (without statistics the planner takes "status = ?" for a few rows).
    blocked = db.execute(
        "SELECT t.line, t.EmailAddress FROM act_rows t CROSS JOIN contact c "
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
            "DELETE FROM act_rows WHERE email_key IN (SELECT t.email_key FROM act_rows t "
            "CROSS JOIN contact c ON c.account_id = ? AND c.email_key = t.email_key "
            "WHERE c.status = ?)",
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
        "EmailAddress = excluded.EmailAddress, "  # the last row wins, its spelling too
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
    load_rows: RowLoader,
) -> tuple[int, list[RowError]]:
    _check_lists(db, account_id, request.list_ids)
    load_rows(db, prepared)
    marks = ",".join("?" * len(request.list_ids))
    db.execute("DROP TABLE IF EXISTS temp.act_found")
    db.execute(
        "CREATE TEMP TABLE act_found (contact_id INTEGER PRIMARY KEY, email_key TEXT NOT NULL)"
    )
    # CROSS JOIN: look each row up by its email. With a plain JOIN SQLite's planner (with
    # or without ANALYZE statistics) walks every contact of the account in contact_email
    # order and probes the rows for each: O(account), ~1.5 s on a 1 M-contact account
    # whatever the activity's size (benchmarks/README.md, "sv-remove").
    db.execute(
        "INSERT INTO act_found SELECT c.id, t.email_key FROM act_rows t CROSS JOIN contact c "
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
    load_rows: RowLoader = _load_rows,
) -> tuple[int, int]:
    """Apply an add, remove or clear activity and complete it, in one transaction.

    The activity must be RUNNING. Returns ``(TransactionCount, number of errors)``.
    ``before_commit`` (tests only: :attr:`Worker.before_commit`) is called with the id once
    the rows are applied, before the activity is completed and committed.
    ``load_rows`` fills the temporary table of rows (PostgreSQL: ``COPY``).

    Raises:
        ActivityCannotRun: a list is gone (nothing is applied; the caller fails it).
    """
    activity_type = ActivityType(request.type)
    adding = activity_type in ADD_TYPES
    removing = activity_type is ActivityType.REMOVE_CONTACTS_FROM_LISTS
    # Validation is pure: done before the write lock is taken.
    prepared = _prepare(request, check_fields=adding) if adding or removing else None
    # The commit of a big activity would run a WAL checkpoint of everything it wrote:
    # the worker starts one in the background afterwards instead (Worker._start_checkpoint).
    with without_autocheckpoint(db), write_tx(db):
        # Stamped once the write lock is held, not before waiting for it: a change's
        # last_update_time precedes its commit by the transaction only (updatedsince).
        now = now_ms()
        if adding and prepared is not None:
            count, errors = _apply_add(db, account_id, request, prepared, now, load_rows)
        elif removing and prepared is not None:
            count, errors = _apply_remove(db, account_id, request, prepared, now, load_rows)
        elif activity_type is ActivityType.CLEAR_CONTACTS_FROM_LISTS:
            count, errors = _apply_clear(db, account_id, request, now)
        else:
            raise ActivityCannotRun(f"{activity_type} is not applied with rows")
        errors.sort(key=lambda e: e.line)
        bump_write_seq(db, account_id)  # one per applied activity, whatever it changed
        if before_commit is not None:
            before_commit(activity_id)
        finish_activity(db, activity_id, count, errors)
    return count, len(errors)
