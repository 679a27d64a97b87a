"""The store's SQL on PostgreSQL: a ``sqlite3.Connection``-shaped adapter over psycopg.

The query modules (:mod:`~bulkops.server.queries`, :mod:`~bulkops.server.campaign_queries`,
…) are written once, in the SQL both databases understand, against the part of the DB-API
``sqlite3`` offers: ``execute(sql, params)`` returning a cursor (``fetchone``, ``fetchall``,
``fetchmany``, ``rowcount``, ``lastrowid``, iteration), ``executemany``, and transactions
spelled ``BEGIN IMMEDIATE`` / ``COMMIT`` / ``ROLLBACK`` (:func:`~bulkops.server.store.write_tx`).
:class:`PgConnection` gives them that shape on a psycopg connection, and :func:`translate`
rewrites the few SQLite spellings they use — a closed list, each rule named in
:data:`_RULES` and tested; SQL that needs more than these has a PostgreSQL module of its own
(:mod:`~bulkops.server.pg_apply`, :mod:`~bulkops.server.pg_exports`).

Invariants:

* **Writers are serialized as on SQLite.** ``BEGIN IMMEDIATE`` becomes ``BEGIN`` plus a
  transaction-scoped advisory lock (:data:`WRITE_LOCK`), so check-then-write transactions
  (a list name's uniqueness, the next campaign id) see what SQLite's single writer sees;
  readers never wait for it (MVCC). Any number of processes share the lock.
* Connections run in autocommit mode outside those transactions, as the SQLite ones do.
* ``PRAGMA`` statements (SQLite's WAL tuning) do nothing.
* Parameters: ``?`` placeholders become ``%s`` and ``:name`` ``%(name)s`` (a literal ``%``
  is doubled); Python ``bool`` is sent as 0/1 (the schema keeps SQLite's integer flags);
  ``numeric`` results (``sum`` of integers) come back as ``int``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Loader

__all__ = ["WRITE_LOCK", "PgConnection", "PgCursor", "translate"]

#: The advisory lock key every write transaction holds (``BEGIN IMMEDIATE`` on SQLite).
WRITE_LOCK = 0x62_756C_6B6F_7073  # "bulkops"

_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"

# (name, pattern, replacement): applied in order to every statement, once, then cached.
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("write transaction", re.compile(r"^\s*BEGIN IMMEDIATE\s*$", re.I), _BEGIN_WRITE),
    ("no rowid tables", re.compile(r"\)\s*WITHOUT ROWID", re.I), ")"),
    ("temp schema", re.compile(r"\btemp\.(\w+)"), r"pg_temp.\1"),
    ("last rowid", re.compile(r"\browid\s*=\s*last_insert_rowid\(\)", re.I), "id = lastval()"),
    (
        "case-insensitive equality",
        re.compile(r"(\w+)\s*=\s*\?\s+COLLATE NOCASE", re.I),
        r"lower(\1) = lower(?)",
    ),
    (
        "sum of a condition",
        re.compile(r"\bsum\((\w+\.\w+\s*=\s*'[^']*')\)", re.I),
        r"sum(CASE WHEN \1 THEN 1 ELSE 0 END)",
    ),
    # SQLite's schema introspection (the seeder's trigger juggling): no such rows here.
    ("sqlite_master", re.compile(r"^SELECT .* FROM sqlite_master\b.*$", re.I | re.S), "-- nothing"),
    # SQLite's two-argument max/min are PostgreSQL's greatest/least.
    ("scalar max", re.compile(r"\bmax\(([^(),]+),([^(),]+)\)", re.I), r"greatest(\1,\2)"),
    ("scalar min", re.compile(r"\bmin\(([^(),]+),([^(),]+)\)", re.I), r"least(\1,\2)"),
    ("join on", re.compile(r"\bCROSS JOIN (\w+ \w+) ON\b", re.I), r"JOIN \1 ON"),
    # PostgreSQL wants every selected column grouped (the name depends on the id anyway).
    (
        "group by id, name",
        re.compile(r"GROUP BY e\.campaign_id\b"),
        "GROUP BY e.campaign_id, cm.name",
    ),
)

_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.I)
_PRAGMA = re.compile(r"^\s*PRAGMA\b", re.I)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The PostgreSQL spelling of one statement of the shared SQL (see :data:`_RULES`).

    ``INSERT OR IGNORE`` becomes ``INSERT … ON CONFLICT DO NOTHING``; ``?`` becomes ``%s``
    (outside string literals, which hold no ``?`` in our SQL), ``%`` becomes ``%%``.
    """
    for _name, pattern, replacement in _RULES:
        sql = pattern.sub(replacement, sql)
    if _INSERT_OR_IGNORE.match(sql):
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)
        found = _RETURNING.search(sql)
        if found:
            sql = f"{sql[: found.start()]}ON CONFLICT DO NOTHING {sql[found.start() :]}"
        else:
            sql = sql.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


# sqlite3's named parameters (``:name``, never ``::`` casts in the shared SQL).
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def _params(params: Sequence[Any] | Mapping[str, Any]) -> Any:
    if isinstance(params, Mapping):
        return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


class _IntegralNumericLoader(Loader):
    """``numeric`` as ``int`` when integral (``sum`` over integers), else ``float``."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        return int(text) if text.lstrip("-").isdigit() else float(text)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set a new pooled connection up as the adapter expects (autocommit, numeric loader)."""
    conn.autocommit = True
    conn.adapters.register_loader("numeric", _IntegralNumericLoader)


class PgCursor:
    """The result of :meth:`PgConnection.execute`, shaped like a ``sqlite3.Cursor``."""

    def __init__(self, cursor: psycopg.Cursor[Any], conn: psycopg.Connection[Any]) -> None:
        self._cursor = cursor
        self._conn = conn

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement (``-1`` when unknown)."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The id generated by the session's last INSERT (``lastval()``), as sqlite3's."""
        row = self._conn.execute("SELECT lastval()").fetchone()
        return None if row is None else int(row[0])

    def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return self._cursor.fetchall() if self._cursor.description else []

    def fetchmany(self, size: int) -> list[Any]:
        """Up to ``size`` rows."""
        return self._cursor.fetchmany(size) if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection speaking the ``sqlite3`` subset the query modules use."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PgCursor:
        """Run one statement of the shared SQL."""
        statement = translate(sql)
        if _PRAGMA.match(statement) or statement == "-- nothing":  # SQLite-only: no rows
            return PgCursor(self.raw.cursor(), self.raw)
        if statement == _BEGIN_WRITE:
            self.raw.execute("BEGIN")
            self.raw.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            return PgCursor(self.raw.cursor(), self.raw)
        cursor = self.raw.cursor()
        cursor.execute(statement.encode(), _params(params))
        return PgCursor(cursor, self.raw)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        """Run one statement for each parameter row (psycopg pipelines them)."""
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql).encode(), [_params(row) for row in rows])
        return PgCursor(cursor, self.raw)

    def getlimit(self, _category: int) -> int:
        """sqlite3's bound-parameter limit; PostgreSQL allows 65,535 per statement."""
        return 65_535
