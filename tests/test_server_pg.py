"""The PostgreSQL store's pure parts (no cluster needed) and its secrets hygiene."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bulkops.server.pg_dialect import WRITE_LOCK, translate
from bulkops.server.pg_storage import redact
from bulkops.server.serve import open_storage, resolve_db
from tests.pgkit import fresh_database


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        (
            "SELECT id FROM list WHERE id = ? AND x = ?",
            "SELECT id FROM list WHERE id = %s AND x = %s",
        ),
        (
            "UPDATE list SET name = :name WHERE id = :id",
            "UPDATE list SET name = %(name)s WHERE id = %(id)s",
        ),
        ("SELECT 'a%' LIKE ?", "SELECT 'a%%' LIKE %s"),
        (
            "INSERT OR IGNORE INTO membership (list_id) SELECT ? FROM t",
            "INSERT INTO membership (list_id) SELECT %s FROM t ON CONFLICT DO NOTHING",
        ),
        (
            "INSERT OR IGNORE INTO t (a) VALUES (?) RETURNING a",
            "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING a",
        ),
        (
            "CREATE TEMP TABLE t (a TEXT PRIMARY KEY) WITHOUT ROWID",
            "CREATE TEMP TABLE t (a TEXT PRIMARY KEY)",
        ),
        ("DROP TABLE temp.act_rows", "DROP TABLE pg_temp.act_rows"),
        (
            "SELECT x FROM e WHERE rowid = last_insert_rowid()",
            "SELECT x FROM e WHERE id = lastval()",
        ),
        ("WHERE name = ? COLLATE NOCASE", "WHERE lower(name) = lower(%s)"),
        (
            "SELECT sum(e.kind = 'opens')",
            "SELECT sum(CASE WHEN e.kind = 'opens' THEN 1 ELSE 0 END)",
        ),
        ("SET t = max(t, ?), u = min(u, ?)", "SET t = greatest(t, %s), u = least(u, %s)"),
        ("FROM a t CROSS JOIN contact c ON c.k = t.k", "FROM a t JOIN contact c ON c.k = t.k"),
        ("SELECT sql FROM sqlite_master WHERE name = ?", "-- nothing"),
        ("BEGIN IMMEDIATE", f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"),
    ],
)
def test_each_sqlite_spelling_has_its_postgres_one(sqlite: str, postgres: str) -> None:
    """The dialect rules, one at a time."""
    assert translate(sqlite) == postgres


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u@h:5432/db"),
        (
            "postgresql://u@h/db?password=s3cret&sslmode=require",
            "postgresql://u@h/db?sslmode=require",
        ),
        ("postgres://h/db", "postgres://h/db"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    """Logs and reprs show the URL minus the password, wherever it was."""
    assert redact(url) == shown


def test_a_password_on_the_command_line_is_warned_about(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--db with a password works but warns (ps shows it); BULKOPS_DB does not warn."""
    with caplog.at_level(logging.WARNING, logger="bulkops.server"):
        assert resolve_db("postgresql://u:pw@h/db") == "postgresql://u:pw@h/db"
    assert "visible to every user in ps" in caplog.text
    caplog.clear()
    monkeypatch.setenv("BULKOPS_DB", "postgresql://u:pw@h/db")
    with caplog.at_level(logging.WARNING, logger="bulkops.server"):
        assert resolve_db(None) == "postgresql://u:pw@h/db"
        assert resolve_db("x.db") == Path("x.db")
    assert caplog.text == ""


def test_a_libpq_keyword_string_is_refused_not_made_a_file(tmp_path: Path) -> None:
    """'host=h dbname=d' is neither a path nor a URL: refused, no file of that name."""
    with pytest.raises(ValueError, match="postgresql:// URL"):
        open_storage("host=h dbname=d")
    assert not Path("host=h dbname=d").exists()


def test_the_store_names_its_database_without_the_password(tmp_path: Path) -> None:
    """repr and location of a PostgreSQL store never hold the password."""
    with fresh_database() as url:
        store = open_storage(url, data_dir=tmp_path)
        try:
            password = url.split("@", 1)[0].rsplit(":", 1)[1]
            assert password not in repr(store)
            assert password not in store.location
            assert store.location.startswith("postgresql://")
        finally:
            store.close()


def test_migrations_upgrade_version_by_version_and_refuse_a_newer_schema() -> None:
    """A version-1 database is upgraded to the latest; again is a no-op; newer is refused."""
    import psycopg

    from bulkops.server.pg_schema import PG_MIGRATIONS, migrate, schema_version

    with fresh_database() as url, psycopg.connect(url, autocommit=True) as conn:
        assert schema_version(conn) == len(PG_MIGRATIONS)  # the template is migrated
        conn.execute("ALTER TABLE account DROP COLUMN write_seq")  # back to version 4
        conn.execute("DROP TRIGGER list_drop_members ON list")  # back to version 3
        conn.execute("DROP TRIGGER contact_drop_members ON contact")
        conn.execute("DROP FUNCTION list_drop_members(), contact_drop_members()")
        conn.execute(
            "ALTER TABLE membership ADD CONSTRAINT membership_list_id_fkey FOREIGN KEY (list_id)"
            " REFERENCES list(id) ON DELETE CASCADE, ADD CONSTRAINT membership_contact_id_fkey"
            " FOREIGN KEY (contact_id) REFERENCES contact(id) ON DELETE CASCADE"
        )
        conn.execute("DROP TABLE activity_request")  # back to version 1
        conn.execute("DROP FUNCTION activity_request_account()")
        conn.execute("ALTER TABLE activity DROP COLUMN lease_owner, DROP COLUMN lease_expires")
        conn.execute("DROP TABLE throttle_bucket, login_failure, throttle_day")
        conn.execute("DELETE FROM bulkops_schema WHERE version > 1")
        assert schema_version(conn) == 1
        assert migrate(conn) == len(PG_MIGRATIONS) == 5
        assert conn.execute("SELECT to_regclass('activity_request')").fetchone() == (
            "activity_request",
        )
        conn.execute("SELECT write_seq FROM account LIMIT 0")  # the column is back
        assert migrate(conn) == 5
        assert conn.execute("SELECT count(*) FROM bulkops_schema").fetchone() == (5,)
        conn.execute("INSERT INTO bulkops_schema (version) VALUES (6)")
        with pytest.raises(RuntimeError, match="newer"):
            migrate(conn)


def test_worker_takes_what_serve_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``bulkops worker``'s --db resolves as serve's: a path, a URL, else BULKOPS_DB; a libpq
    keyword string is a configuration error."""
    from bulkops.errors import ConfigError
    from bulkops.server import worker_cli

    store = worker_cli.open_storage(tmp_path / "w.db")
    try:
        assert store.location.endswith("w.db")
    finally:
        store.close()
    monkeypatch.setenv("BULKOPS_DB", str(tmp_path / "env.db"))
    store = worker_cli.open_storage(None)
    try:
        assert store.location.endswith("env.db")
    finally:
        store.close()
    with pytest.raises(ConfigError, match="postgresql:// URL"):
        worker_cli.open_storage("host=h dbname=d")
    with fresh_database() as url:
        monkeypatch.setenv("BULKOPS_DB", url)
        store = worker_cli.open_storage(None)
        try:
            assert store.location.startswith("postgresql://")
            assert (urlsplit(url).password or "?") not in repr(store)
        finally:
            store.close()


async def test_the_postgres_apply_inserts_members_its_own_way_and_cascades_hold(
    tmp_path: Path,
) -> None:
    """An SV_ADD on PostgreSQL runs the rewritten upsert and membership insert (the shared
    statements are still recognised), skips existing members, and deleting a contact or a
    list removes its memberships and keeps the counts (the triggers of schema version 4)."""
    from bulkops.server import pg_apply
    from bulkops.server.app import ServerConfig
    from bulkops.server.datafile import ActivityRequest, encode_request
    from bulkops.server.serve import open_state
    from bulkops.server.store import write_tx
    from tests.serverkit import DEMO

    seen: list[int] = []
    original = pg_apply._ApplyConnection.execute

    def spy(self, sql, params=()):  # type: ignore[no-untyped-def]
        cursor = original(self, sql, params)
        seen.append(self.rewritten if self._upserted else -1)
        return cursor

    with fresh_database() as url:
        state = open_state(url, ServerConfig(), accounts=[DEMO], data_dir=tmp_path)
        db = state.store.connection()  # type: ignore[attr-defined]
        with write_tx(db):
            for list_id in (7, 8):
                db.execute(
                    "INSERT INTO list (id, account_id, name, short_name, updated) "
                    "VALUES (?, 1, ?, ?, 0)",
                    (list_id, f"L{list_id}", f"L{list_id}"),
                )
        try:
            pg_apply._ApplyConnection.execute = spy  # type: ignore[method-assign]
            for emails in (["a@x.org", "b@x.org"], ["b@x.org", "c@x.org"]):
                request = ActivityRequest(
                    type="SV_ADD", list_ids=(7, 8), fields=("EmailAddress",), columns=[emails]
                )
                row = await state.store.create_activity(1, request, encode_request(request), None)
                assert await state.store.claim_activity("w:1:x", 0, 60.0) is not None
                assert await state.store.apply_activity(row.id, 1, request) == (2, 0)
        finally:
            pg_apply._ApplyConnection.execute = original  # type: ignore[method-assign]
            # Both lists' inserts were rewritten in each activity, after the upsert kept its ids.
        assert sorted(set(seen)) == [-1, 0, 1, 2]  # -1: before the upsert kept its ids

        def members() -> list[tuple[int, int, int]]:
            return [
                tuple(r)
                for r in db.execute(
                    "SELECT l.id, l.member_count, (SELECT count(*) FROM membership m "
                    "WHERE m.list_id = l.id AND m.account_id = 1) FROM list l ORDER BY l.id"
                )
            ]

        assert members() == [(7, 3, 3), (8, 3, 3)]
        with write_tx(db):
            db.execute("DELETE FROM contact WHERE email_key = 'b@x.org'")
        assert members() == [(7, 2, 2), (8, 2, 2)]
        with write_tx(db):
            db.execute("DELETE FROM list WHERE id = 7")
        assert members() == [(8, 2, 2)]
        (left,) = db.execute("SELECT count(*) FROM membership").fetchone()
        assert left == 2
        state.store.close()
