"""Crash safety of the import engine: SIGKILL the CLI again and again, resume, compare.

A 40,000-row import in 40 chunks is killed at least ten times — ten times through the
engine's test hook, exactly between a POST's answer and its journal write (so the count does
not depend on how fast the machine is), then at random moments — and resumed each time. The
final server state must equal an uninterrupted import of the same file into another account,
the final report must account for every row, and no two chunks may name the same activity. A
failing run's directories (journal, server database and log) stay in pytest's temporary
directory (``--basetemp DIR`` puts them where you want).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.enginekit import contact_rows, write_csv

ROWS = 40_000
#: Rows per activity: 40 chunks, so that every hooked kill leaves chunks to send (the count
#: of chunks is what matters here, not their size: 200,000 rows in chunks of 5,000 took a
#: minute of a busy machine for the same kills).
MAX_ROWS = 1_000


def _wait_for_origin(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text() if log.exists() else ""
        if "serving the API at " in text:
            return text.split("serving the API at ", 1)[1].split("/ws/", 1)[0]
        time.sleep(0.05)  # waiting for another process to start, not timing a result
    raise AssertionError("server did not start:\n" + (log.read_text() if log.exists() else ""))


def _db_state(db_path: Path, username: str) -> dict[str, tuple[object, ...]]:
    import sqlite3

    db = sqlite3.connect(db_path)
    try:
        rows = db.execute(
            "SELECT c.email_key, c.FirstName, c.LastName, c.City, c.StateCode, c.status,"
            " (SELECT group_concat(l.name) FROM membership m JOIN list l ON l.id = m.list_id"
            "  WHERE m.contact_id = c.id)"
            " FROM contact c JOIN account a ON a.id = c.account_id WHERE a.username = ?",
            (username,),
        ).fetchall()
    finally:
        db.close()
    return {row[0]: tuple(row[1:]) for row in rows}


def _activities_named_twice(journal_path: Path) -> list[tuple[str, int]]:
    """Activities the journal gives to more than one chunk (one adopted another's)."""
    import sqlite3

    db = sqlite3.connect(journal_path)
    try:
        return db.execute(
            "SELECT activity_id, count(*) FROM chunk WHERE activity_id IS NOT NULL"
            " GROUP BY activity_id HAVING count(*) > 1"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """≥10 SIGKILLs (one between a POST and its journal write), resume, same final state."""
    rng = random.Random(int(os.environ.get("BULKOPS_CRASH_SEED", "20261126")))
    rows = contact_rows(ROWS, seed=7)
    # Duplicates across chunks, so the order rule is exercised through the crashes too.
    rows += [[f"c{i}@example.org", "Again", f"Dup{i}", "Reno", "NV"] for i in range(0, ROWS, 9973)]
    source = write_csv(tmp_path / "big.csv", rows)
    db_path = tmp_path / "server.db"
    accounts = tmp_path / "accounts"
    accounts.write_text("crash:pw-crash:key-crash\nref:pw-ref:key-ref\n")
    server_log = tmp_path / "server.log"
    with server_log.open("wb") as log_handle:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulkops",
                "serve",
                "--port",
                "0",
                "--db",
                str(db_path),
                "--accounts-file",
                str(accounts),
            ],
            stderr=log_handle,
            stdout=subprocess.DEVNULL,
        )
    try:
        origin = _wait_for_origin(server, server_log)

        def cli(
            user: str, *args: str, env_extra: dict[str, str] | None = None
        ) -> subprocess.Popen[str]:
            env = {
                **os.environ,
                "BULKOPS_USERNAME": user,
                "BULKOPS_API_KEY": f"key-{user}",
                "BULKOPS_PASSWORD": f"pw-{user}",
                **(env_extra or {}),
            }
            return subprocess.Popen(
                [sys.executable, "-m", "bulkops", *args, "--server", origin, "--quiet"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        common = ["--list", "Crash", "--create-lists", "--max-rows", str(MAX_ROWS)]
        reference = cli("ref", "import", str(source), *common, "--run-dir", str(tmp_path / "ref"))
        assert reference.wait(timeout=600) == 2, reference.stderr.read() if reference.stderr else ""

        run_dir = tmp_path / "crash-run"
        kills = 0
        first = cli(
            "crash",
            "import",
            str(source),
            *common,
            "--run-dir",
            str(run_dir),
            env_extra={"BULKOPS_TEST_KILL_AFTER_POST": "2"},
        )
        assert first.wait(timeout=600) == -signal.SIGKILL  # killed by the hook, after a POST
        kills += 1
        finished = False
        attempts = 0
        while not finished:
            attempts += 1
            assert attempts < 60, "resume never finished"
            # Ten kills are certain, however fast the machine: each of the first ones comes
            # through the hook, right after a POST's answer and before its journal write
            # (every resume has chunks left to send: 40 chunks, at most a few per kill). Then
            # up to two at random moments, which a fast resume may outrun.
            env_extra = {"BULKOPS_TEST_KILL_AFTER_POST": "1"} if kills < 10 else None
            proc = cli("crash", "resume", str(run_dir), env_extra=env_extra)
            if kills < 12 and env_extra is None:
                try:
                    proc.wait(timeout=rng.uniform(0.4, 2.5))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=60)
                    kills += 1
                    continue
            code = proc.wait(timeout=600)
            if code == -signal.SIGKILL:
                kills += 1
                continue
            assert code == 2, proc.stderr.read() if proc.stderr else code
            finished = True
        assert kills >= 10
        report = json.loads((run_dir / "report.json").read_text())
        counts = report["counts"]
        assert counts["read"] == len(rows)
        assert counts["pending"] == 0
        assert counts["applied"] + counts["duplicate"] + counts["failed"] + counts[
            "rejected"
        ] == len(rows)
        assert counts["duplicate"] == len(range(0, ROWS, 9973))
        assert counts["applied"] == ROWS
        assert _db_state(db_path, "crash") == _db_state(db_path, "ref")
        assert _activities_named_twice(run_dir / "journal.sqlite") == []
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
