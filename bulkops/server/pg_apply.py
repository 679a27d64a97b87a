"""Applying an activity on PostgreSQL: :mod:`~bulkops.server.apply`'s set-based SQL, with
the rows loaded by ``COPY`` and the memberships inserted the way PostgreSQL does it fastest.

The validation, the statements and the all-or-nothing transaction are those of
:func:`bulkops.server.apply.apply_activity`; two things differ:

* **The load.** The validated rows go into the temporary table ``act_rows`` through one
  ``COPY … FROM STDIN`` (binary-safe, streamed by psycopg in row batches), not multi-row
  ``INSERT``\\ s.
* **The memberships** (:data:`MEMBERSHIP_INSERT`). The shared statement finds each row's
  contact by email again, leaves ``membership.account_id`` to a per-row trigger and skips
  existing members with ``ON CONFLICT DO NOTHING`` (a speculative insertion per row). Here
  the contact upsert keeps the ids it touched in ``act_ids`` (``RETURNING id, xmax = 0``:
  whether it created the contact), the account is given, members of contacts it created
  go in directly (they can be on no list yet) and the others are left out by an anti-join
  when already members: the apply holds the write lock
  (:data:`~bulkops.server.pg_dialect.WRITE_LOCK`), so no other writer can add a member
  between the check and the insert (the primary key would still refuse a duplicate,
  failing the activity whole rather than applying it twice).

The two rewrites are recognised by the statements' text (:data:`SHARED_MEMBERSHIP_INSERT`,
the start of the contact upsert); ``tests/test_server_pg.py`` fails when the shared SQL
changes under them. With schema version 4 (no per-row foreign keys on membership) a
40,000-row SV_ADD went from 4.5 s to about 2 s (benchmarks/README.md, "PostgreSQL").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bulkops.server import apply
from bulkops.server.datafile import ActivityRequest
from bulkops.server.pg_dialect import PgConnection, PgCursor, _params, translate

__all__ = [
    "MEMBERSHIP_INSERT",
    "MEMBERSHIP_INSERT_BY_EMAIL",
    "SHARED_MEMBERSHIP_INSERT",
    "apply_activity",
    "copy_rows",
]

#: The membership insert of :func:`bulkops.server.apply._apply_add`, as it reaches
#: :meth:`PgConnection.execute`; params ``(list_id, opt_in_source, now, account_id)``.
SHARED_MEMBERSHIP_INSERT = (
    "INSERT OR IGNORE INTO membership (list_id, contact_id, opt_in_source, opt_in_time) "
    "SELECT ?, c.id, ?, ? FROM act_rows t CROSS JOIN contact c "
    "ON c.account_id = ? AND c.email_key = t.email_key ORDER BY c.id"
)

#: What runs instead on PostgreSQL. ``act_ids`` holds the ids the contact upsert touched
#: (``fresh`` when it inserted the contact): a contact made by this very transaction is on
#: no list yet, so only the others need the anti-join, and none a lookup by email.
MEMBERSHIP_INSERT = (
    "INSERT INTO membership (account_id, list_id, contact_id, opt_in_source, opt_in_time) "
    "SELECT %(account)s, %(list)s, i.id, %(source)s, %(now)s FROM act_ids i "
    "WHERE i.fresh OR NOT EXISTS (SELECT 1 FROM membership m "
    "WHERE m.account_id = %(account)s AND m.list_id = %(list)s AND m.contact_id = i.id) "
    "ORDER BY i.id"
)

#: The same without ``act_ids`` (should the contact upsert not be recognised): members
#: found by email, existing ones left out by the anti-join.
MEMBERSHIP_INSERT_BY_EMAIL = (
    "INSERT INTO membership (account_id, list_id, contact_id, opt_in_source, opt_in_time) "
    "SELECT c.account_id, %(list)s, c.id, %(source)s, %(now)s FROM act_rows t JOIN contact c "
    "ON c.account_id = %(account)s AND c.email_key = t.email_key "
    "WHERE NOT EXISTS (SELECT 1 FROM membership m "
    "WHERE m.account_id = c.account_id AND m.list_id = %(list)s AND m.contact_id = c.id) "
    "ORDER BY c.id"
)

# How the shared contact upsert of apply._apply_add starts (its ids go to act_ids).
_UPSERT_START = "INSERT INTO contact (account_id, email_key, EmailAddress"


class _ApplyConnection(PgConnection):
    """:class:`PgConnection` keeping the contact upsert's ids and running
    :data:`MEMBERSHIP_INSERT` for the shared membership statement."""

    def __init__(self, conn: PgConnection) -> None:
        super().__init__(conn.raw)
        #: How many membership inserts were rewritten (tests check it is not 0).
        self.rewritten = 0
        self._upserted = False

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PgCursor:
        if sql.startswith(_UPSERT_START) and "FROM act_rows" in sql:
            self.raw.execute(
                "CREATE TEMP TABLE act_ids (id BIGINT NOT NULL, fresh BOOLEAN NOT NULL)"
                " ON COMMIT DROP"
            )
            # ``xmax = 0``: the row version was inserted by this statement, not updated (an
            # updated row's xmax holds the updating transaction): PostgreSQL's usual way to
            # tell them apart in ``INSERT … ON CONFLICT DO UPDATE … RETURNING``.
            statement = (
                f"WITH up AS ({translate(sql)} RETURNING id, xmax = 0 AS fresh) "
                "INSERT INTO act_ids SELECT id, fresh FROM up"
            )
            cursor = self.raw.cursor()
            cursor.execute(statement.encode(), _params(params))
            self._upserted = True
            return PgCursor(cursor, self.raw)
        if sql == SHARED_MEMBERSHIP_INSERT and isinstance(params, Sequence):
            list_id, source, now, account_id = params
            cursor = self.raw.cursor()
            cursor.execute(
                (MEMBERSHIP_INSERT if self._upserted else MEMBERSHIP_INSERT_BY_EMAIL).encode(),
                {"list": list_id, "source": source, "now": now, "account": account_id},
            )
            self.rewritten += 1
            return PgCursor(cursor, self.raw)
        return super().execute(sql, params)


def copy_rows(db: PgConnection, prepared: Any) -> None:
    """Create ``act_rows`` (dropped at commit) and fill it with one ``COPY``."""
    fields: tuple[str, ...] = prepared.fields
    columns = "".join(f", {field} TEXT NOT NULL" for field in fields)
    raw = db.raw
    raw.execute("DROP TABLE IF EXISTS pg_temp.act_rows")
    raw.execute(
        (
            # No primary key: the rows are unique by email_key already (validation keeps the
            # last row of each address), and every statement reading the table scans it
            # whole while probing the indexed tables — an index here would only cost its
            # upkeep during the COPY.
            "CREATE TEMP TABLE act_rows (email_key TEXT NOT NULL, line BIGINT NOT NULL, "
            f"EmailAddress TEXT NOT NULL{columns}) ON COMMIT DROP"
        ).encode()
    )
    with raw.cursor().copy(b"COPY act_rows FROM STDIN") as copy:
        for row in prepared.rows():
            copy.write_row(row)
    # No ANALYZE: it cost ~0.25 s of a 40,000-row apply, and the planner's size-based
    # estimate of a temporary table already leads to the same plans here.


def apply_activity(
    db: PgConnection,
    activity_id: str,
    account_id: int,
    request: ActivityRequest,
    before_commit: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """:func:`bulkops.server.apply.apply_activity` with the rows loaded by ``COPY`` and the
    memberships inserted by :data:`MEMBERSHIP_INSERT`."""
    return apply.apply_activity(
        _ApplyConnection(db),  # type: ignore[arg-type]  # the sqlite3 subset the module uses
        activity_id,
        account_id,
        request,
        before_commit,
        load_rows=copy_rows,
    )
