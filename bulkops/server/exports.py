"""Export files of ``EXPORT_CONTACTS`` activities: written in constant memory, renamed atomically.

The worker calls :func:`write_export` in a thread; ``GET /activities/{id}.csv|.txt`` streams the
finished file (spec §7.9).

Invariants:

* **Constant memory.** Rows go from a SQLite cursor (``fetchmany``) through ``csv.writer`` to a
  buffered file; nothing holds the list. The export reads on its own connection with
  ``temp_store=FILE`` and a small page cache, so even an ``ORDER BY`` that SQLite must sort
  spills to disk instead of growing the process.
* **Atomic.** The file is written as ``exports/{id}.{ext}.tmp`` and ``os.replace``-d to
  ``exports/{id}.{ext}``; a reader never sees a partial file, and a crash leaves only a
  ``.tmp`` that the next run of the activity overwrites.
* **One snapshot.** The rows are read in one read transaction (WAL), so a concurrent activity
  never shows half in an export.

File layout (spec §7.9): a header row of title-case names — ``Email Address`` first, then the
requested columns in request order, then ``Date Added``/``Added By`` (``Date Removed``/
``Removed By`` for the Removed and Do Not Mail lists) when asked, then one ``List: {ShortName}``
column per contact list, marked ``x``, when ``exportListName`` is true. CSV is comma-separated
with minimal quoting; TXT is tab-separated. Lines end with CRLF; text is UTF-8. Dates read
``MM/DD/YYYY hh:mm AM UTC``.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from bulkops.server.datafile import ActivityCannotRun, ExportRequest
from bulkops.server.store import STATUS_ACTIVE, STATUS_DO_NOT_MAIL, STATUS_REMOVED
from bulkops.wire.columns import column_for_field

__all__ = [
    "EXPORT_DIR",
    "FETCH_ROWS",
    "export_file_name",
    "export_file_path",
    "export_header",
    "media_type_for",
    "write_export",
]

#: Directory (next to the database) holding export files.
EXPORT_DIR = "exports"
#: Rows fetched from SQLite at a time.
FETCH_ROWS = 2_000

_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "txt": "text/plain; charset=utf-8"}


def export_file_name(activity_id: str, file_type: str) -> str:
    """The ``FileName`` of an export: ``{activityId}.csv`` or ``{activityId}.txt``."""
    return f"{activity_id}.{file_type.lower()}"


def export_file_path(data_dir: Path, activity_id: str, file_name: str) -> Path:
    """Where an activity's export file lives (``file_name`` is only trusted for its suffix)."""
    suffix = "txt" if file_name.lower().endswith(".txt") else "csv"
    return data_dir / EXPORT_DIR / f"{activity_id}.{suffix}"


def media_type_for(file_name: str) -> str:
    """``text/csv`` for ``.csv`` files, ``text/plain`` for ``.txt``."""
    return _MEDIA_TYPES["txt" if file_name.lower().endswith(".txt") else "csv"]


def _removal_list(list_id: str) -> bool:
    return list_id in ("removed", "do-not-mail")


def export_header(export: ExportRequest, list_names: list[str]) -> list[str]:
    """The header row of an export with these settings and these list short names."""
    header = [column_for_field(field).export_header for field in export.fields]
    removal = _removal_list(export.list_id)
    if export.opt_date:
        header.append("Date Removed" if removal else "Date Added")
    if export.opt_source:
        header.append("Removed By" if removal else "Added By")
    header.extend(f"List: {name}" for name in list_names)
    return header


def _date_sql(ms: str) -> str:
    """SQL rendering ``ms`` (epoch milliseconds) as ``MM/DD/YYYY hh:mm AM UTC``, or ``''``.

    One ``strftime`` for the date; hour and minute by integer arithmetic (UTC, times after
    1970), which is twice as fast as formatting them.
    """
    hour = f"(({ms}) / 3600000 % 24)"
    return (
        f"CASE WHEN {ms} IS NULL THEN '' ELSE strftime('%m/%d/%Y ', ({ms}) / 1000, 'unixepoch')"
        f" || printf('%02d:%02d %s UTC', ({hour} + 11) % 12 + 1, ({ms}) / 60000 % 60, "
        f"CASE WHEN {hour} < 12 THEN 'AM' ELSE 'PM' END) END"
    )


def _query(
    export: ExportRequest, account_id: int, list_ids: list[int]
) -> tuple[str, tuple[Any, ...]]:
    """SQL and parameters yielding exactly the cells of each row of the file.

    Every cell is computed by SQLite (dates formatted, list marks by ``EXISTS`` on the
    membership primary key), so rows go from the cursor to ``csv.writer`` untouched.
    """
    if export.list_id.isdigit():
        date, source = "m.opt_in_time", "m.opt_in_source"
        source_sql = "FROM membership m JOIN contact c ON c.id = m.contact_id WHERE m.list_id = ?"
        params: tuple[Any, ...] = (int(export.list_id),)
        newest_first = "m.opt_in_time DESC, c.id DESC"
    else:
        status, date, source = {
            "active": (STATUS_ACTIVE, "coalesce(c.opt_in_time, c.insert_time)", "c.opt_in_source"),
            "removed": (STATUS_REMOVED, "c.last_update_time", "''"),
            "do-not-mail": (STATUS_DO_NOT_MAIL, "c.opt_out_time", "c.opt_out_source"),
        }[export.list_id]
        source_sql = "FROM contact c WHERE c.account_id = ? AND c.status = ?"
        params = (account_id, status)
        newest_first = f"{date} DESC, c.id DESC"
    cells = [f"c.{field}" for field in export.fields]
    if export.opt_date:
        cells.append(_date_sql(date))
    if export.opt_source:
        cells.append(f"coalesce({source}, '')")
    cells.extend(
        f"CASE WHEN EXISTS (SELECT 1 FROM membership x WHERE x.list_id = {int(list_id)} "
        "AND x.contact_id = c.id) THEN 'x' ELSE '' END"
        for list_id in list_ids
    )
    order = "c.email_key" if export.sort_by == "EMAIL_ADDRESS" else newest_first
    return f"SELECT {', '.join(cells)} {source_sql} ORDER BY {order}", params


def _open_reader(db: sqlite3.Connection) -> sqlite3.Connection:
    """A private connection to the same database, tuned to keep memory flat."""
    path = next(row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main")
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60.0)
    reader.execute("PRAGMA busy_timeout=60000")
    reader.execute("PRAGMA temp_store=FILE")
    reader.execute("PRAGMA cache_size=-8192")  # 8 MiB
    reader.execute("PRAGMA query_only=ON")
    return reader


class _Rows(Protocol):
    def fetchmany(self, size: int) -> list[Any]: ...


def export_lists(
    execute: Callable[[str, tuple[Any, ...]], Iterable[Sequence[Any]]],
    export: ExportRequest,
    account_id: int,
    mark: str = "?",
) -> list[tuple[int, str]]:
    """Check that the list to export still exists, and return ``(id, short name)`` of the
    account's lists when the export names them (else ``[]``), through ``execute(sql, args)``
    inside the export's read snapshot; ``mark`` is the driver's parameter placeholder.

    Raises:
        ActivityCannotRun: the list to export no longer exists.
    """
    if export.list_id.isdigit():
        check = f"SELECT 1 FROM list WHERE id = {mark} AND account_id = {mark}"
        if not list(execute(check, (int(export.list_id), account_id))):
            raise ActivityCannotRun(f"list {export.list_id} no longer exists")
    if not export.list_names:
        return []
    names = f"SELECT id, short_name FROM list WHERE account_id = {mark} ORDER BY id"
    return [(int(r[0]), str(r[1])) for r in execute(names, (account_id,))]


def write_rows(
    partial: Path, export: ExportRequest, lists: Sequence[tuple[int, str]], rows: _Rows
) -> int:
    """Write the export file (header, then ``rows`` batch by batch) to ``partial``, synced
    to disk; return the number of rows."""
    count = 0
    delimiter = "\t" if export.file_type == "TXT" else ","
    with partial.open("w", encoding="utf-8", newline="", buffering=1 << 16) as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(export_header(export, [name for _id, name in lists]))
        while batch := rows.fetchmany(FETCH_ROWS):
            writer.writerows(batch)
            count += len(batch)
        out.flush()
        os.fsync(out.fileno())
    return count


def write_export(
    db: sqlite3.Connection,
    data_dir: Path,
    account_id: int,
    activity_id: str,
    export: ExportRequest,
) -> tuple[str, int]:
    """Write an activity's export file; return its ``FileName`` and the number of rows.

    Args:
        db: a connection to the server's database (its path is reused; it is not written).
        data_dir: the directory of the database; the file goes to ``data_dir/exports``.
        account_id: the account whose contacts are exported.
        activity_id: names the file.
        export: the export settings.

    Raises:
        ActivityCannotRun: the list to export no longer exists.
    """
    directory = data_dir / EXPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    file_name = export_file_name(activity_id, export.file_type)
    final = export_file_path(data_dir, activity_id, file_name)
    partial = final.with_name(final.name + ".tmp")
    reader = _open_reader(db)
    count = 0
    try:
        reader.execute("BEGIN")  # one snapshot for the list check and every row
        lists = export_lists(lambda sql, args: reader.execute(sql, args), export, account_id)
        sql, params = _query(export, account_id, [list_id for list_id, _name in lists])
        count = write_rows(partial, export, lists, reader.execute(sql, params))
        reader.execute("COMMIT")
        os.replace(partial, final)
    finally:
        reader.close()
        partial.unlink(missing_ok=True)
    return file_name, count
