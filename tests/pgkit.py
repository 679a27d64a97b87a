"""Throwaway PostgreSQL databases for the server tests (``BULKOPS_TEST_POSTGRES``).

``.ci/with-postgres`` starts a cluster and sets ``BULKOPS_TEST_POSTGRES`` to its URL (and
``BULKOPS_REQUIRE_POSTGRES=1``). Each test gets a database of its own, created from a
migrated template (fast) and dropped afterwards. Without a cluster the PostgreSQL cases
skip — or fail, when ``BULKOPS_REQUIRE_POSTGRES=1`` says a skip would hide them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

#: The store parameters of the suites that run on both stores.
BOTH_STORES = ["sqlite", "postgres"]

# One template per pytest-xdist worker: a worker (re)creates its own, never another's.
_TEMPLATE = "bulkops_test_template_" + os.environ.get("PYTEST_XDIST_WORKER", "main")
_made_template = False


def require_postgres() -> str:
    """The cluster's URL, or skip (fail under ``BULKOPS_REQUIRE_POSTGRES=1``)."""
    url = os.environ.get("BULKOPS_TEST_POSTGRES")
    if url:
        return url
    reason = (
        "PostgreSQL store not tested: BULKOPS_TEST_POSTGRES is not set "
        "(run the tests under .ci/with-postgres)"
    )
    if os.environ.get("BULKOPS_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + " but BULKOPS_REQUIRE_POSTGRES=1")
    pytest.skip(reason)


def _with_dbname(url: str, name: str) -> str:
    """``url`` (``postgresql://…/DB``) naming database ``name`` instead."""
    return urlsplit(url)._replace(path="/" + name).geturl()


def _admin(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _ensure_template(url: str) -> None:
    global _made_template
    if _made_template:
        return
    from bulkops.server.pg_schema import migrate

    with _admin(url) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {_TEMPLATE}")
    with _admin(_with_dbname(url, _TEMPLATE)) as conn:
        migrate(conn)
    _made_template = True


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated database on the test cluster (dropped at exit): its URL."""
    url = require_postgres()
    _ensure_template(url)
    name = "bulkops_t_" + secrets.token_hex(6)
    with _admin(url) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    try:
        yield _with_dbname(url, name)
    finally:
        with _admin(url) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class StoreDb:
    """The database of a test that starts ``bulkops`` processes: a SQLite file or a
    PostgreSQL URL, how to hand it to a process and how to read it from the test.

    A URL (with its password) goes to processes through ``BULKOPS_DB`` in their environment,
    never their argv; a path through ``--db``. ``home`` becomes their ``BULKOPS_HOME`` (where
    the PostgreSQL store writes export files).
    """

    def __init__(self, target: str | Path, *, home: Path) -> None:
        self.target = target
        self.home = home
        self.is_postgres = isinstance(target, str)

    @property
    def password(self) -> str:
        """The URL's password ("" for SQLite), to check that no log shows it."""
        return (urlsplit(str(self.target)).password or "") if self.is_postgres else ""

    def argv(self) -> list[str]:
        """Arguments naming the database on a ``bulkops`` command line."""
        return [] if self.is_postgres else ["--db", str(self.target)]

    def env(self) -> dict[str, str]:
        """Environment naming the database for a ``bulkops`` process."""
        env = {"BULKOPS_HOME": str(self.home)}
        if self.is_postgres:
            env["BULKOPS_DB"] = str(self.target)
        return env

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The first row of ``sql`` (``?`` placeholders), on a connection of its own."""
        rows = self.all(sql, params)
        assert rows, sql
        return rows[0]

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` (``?`` placeholders), on a connection of its own."""
        if self.is_postgres:
            with _admin(str(self.target)) as conn:
                return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params)]
        db = sqlite3.connect(self.target)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
