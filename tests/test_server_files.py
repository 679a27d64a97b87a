"""The server's database files are owner-only: 0600 files in a 0700 directory, umask 022."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bulkops.server.store import Store, write_tx


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_database_and_its_directory_are_owner_only(tmp_path: Path) -> None:
    """server.db, -wal, -shm 0600; the directory created for it 0700 (its parents untouched)."""
    home = tmp_path / "parent" / "home"
    with _umask(0o022):
        store = Store(home / "server.db")
        db = store.connection()
        with write_tx(db):
            db.execute("INSERT INTO account (username, created) VALUES ('x', 0)")
        files = {p.name: _mode(p) for p in home.iterdir()}
        store.close()
    assert files == {"server.db": 0o600, "server.db-wal": 0o600, "server.db-shm": 0o600}
    assert _mode(home) == 0o700
    assert _mode(tmp_path / "parent") == 0o755


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    """A 0644 server.db (and -wal) made by an earlier version becomes 0600; a directory that
    already existed keeps its mode."""
    with _umask(0o022):
        Store(tmp_path / "server.db").close()
        for name in ("server.db", "server.db-wal"):
            path = tmp_path / name
            path.touch()
            path.chmod(0o644)
        tmp_path.chmod(0o755)
        store = Store(tmp_path / "server.db")
        store.connection()
        modes = {name: _mode(tmp_path / name) for name in ("server.db", "server.db-wal")}
        store.close()
    assert modes == {"server.db": 0o600, "server.db-wal": 0o600}
    assert _mode(tmp_path) == 0o755


def test_bulkops_home_made_by_the_server_is_owner_only(tmp_path: Path) -> None:
    """``$BULKOPS_HOME`` created by the server (the embedded default's database) is 0700."""
    home = tmp_path / "bulkops-home"
    code = (
        "import os; os.umask(0o022)\n"
        "from bulkops.server.serve import default_db_path, open_state\n"
        "from bulkops.server.app import ServerConfig\n"
        "open_state(default_db_path(), ServerConfig()).store.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "BULKOPS_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    assert _mode(home) == 0o700
    assert {p.name: _mode(p) for p in home.iterdir() if p.name == "server.db"} == {
        "server.db": 0o600
    }
