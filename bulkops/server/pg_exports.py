"""Writing an export file on PostgreSQL: :mod:`~bulkops.server.exports`' query, with
PostgreSQL's date formatting, read through a server-side cursor (constant memory) in one
``REPEATABLE READ`` snapshot, written atomically (temp file, fsync, ``os.replace``)."""

from __future__ import annotations

import os
from pathlib import Path

from bulkops.server import exports
from bulkops.server.datafile import ExportRequest
from bulkops.server.pg_dialect import PgConnection, translate

__all__ = ["write_export"]

# The dates an export may show (exports._query): SQLite's strftime/printf → to_char.
_DATES = (
    "m.opt_in_time",
    "coalesce(c.opt_in_time, c.insert_time)",
    "c.last_update_time",
    "c.opt_out_time",
)


def _pg_date(ms: str) -> str:
    return (
        f"CASE WHEN {ms} IS NULL THEN '' ELSE to_char(to_timestamp(({ms}) / 1000) "
        "AT TIME ZONE 'UTC', 'MM/DD/YYYY HH12:MI AM') || ' UTC' END"
    )


def _pg_query(sql: str) -> str:
    for date in _DATES:
        sql = sql.replace(exports._date_sql(date), _pg_date(date))
    return translate(sql)


def write_export(
    db: PgConnection, data_dir: Path, account_id: int, activity_id: str, export: ExportRequest
) -> tuple[str, int]:
    """As :func:`bulkops.server.exports.write_export`: ``(FileName, rows)``.

    Raises:
        ActivityCannotRun: the list to export no longer exists.
    """
    directory = data_dir / exports.EXPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    file_name = exports.export_file_name(activity_id, export.file_type)
    final = exports.export_file_path(data_dir, activity_id, file_name)
    partial = final.with_name(final.name + ".tmp")
    raw = db.raw
    count = 0
    try:
        with raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            lists = exports.export_lists(
                lambda sql, args: raw.execute(sql, args).fetchall(),
                export,
                account_id,
                mark="%s",
            )
            sql, params = exports._query(export, account_id, [i for i, _name in lists])
            with raw.cursor(name="bulkops_export") as cursor:
                cursor.execute(_pg_query(sql).encode(), params)
                count = exports.write_rows(partial, export, lists, cursor)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return file_name, count
