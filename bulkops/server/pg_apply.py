"""Applying an activity on PostgreSQL: :mod:`~bulkops.server.apply`'s set-based SQL, with
the rows loaded by ``COPY``.

The validation, the statements and the all-or-nothing transaction are those of
:func:`bulkops.server.apply.apply_activity`; only the load differs: the validated rows go
into the temporary table ``act_rows`` through one ``COPY … FROM STDIN`` (binary-safe,
streamed by psycopg in row batches), not multi-row ``INSERT``s, then ``INSERT … ON
CONFLICT`` and friends apply them in a few statements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bulkops.server import apply
from bulkops.server.datafile import ActivityRequest
from bulkops.server.pg_dialect import PgConnection

__all__ = ["apply_activity", "copy_rows"]


def copy_rows(db: PgConnection, prepared: Any) -> None:
    """Create ``act_rows`` (dropped at commit) and fill it with one ``COPY``."""
    fields: tuple[str, ...] = prepared.fields
    columns = "".join(f", {field} TEXT NOT NULL" for field in fields)
    raw = db.raw
    raw.execute("DROP TABLE IF EXISTS pg_temp.act_rows")
    raw.execute(
        (
            "CREATE TEMP TABLE act_rows (email_key TEXT PRIMARY KEY, line BIGINT NOT NULL, "
            f"EmailAddress TEXT NOT NULL{columns}) ON COMMIT DROP"
        ).encode()
    )
    with raw.cursor().copy(b"COPY act_rows FROM STDIN") as copy:
        for row in prepared.rows():
            copy.write_row(row)


def apply_activity(
    db: PgConnection,
    activity_id: str,
    account_id: int,
    request: ActivityRequest,
    before_commit: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """:func:`bulkops.server.apply.apply_activity` with the rows loaded by ``COPY``."""
    return apply.apply_activity(
        db,  # type: ignore[arg-type]  # the sqlite3 subset the module uses
        activity_id,
        account_id,
        request,
        before_commit,
        load_rows=copy_rows,
    )
