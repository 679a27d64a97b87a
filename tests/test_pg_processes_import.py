"""The whole system on PostgreSQL: two ``bulkops serve --processes 2`` and a separate
``bulkops worker`` on one database, an engine import of 200,000 rows with the server's fault
plan on, the CLI SIGKILLed and resumed (against one server, then the other) — and the
database ends exactly as the file says: every row applied once, every contact a member of the
list, the member count right, no activity left half applied or running.

The kills come through the engine's test hook (``BULKOPS_TEST_KILL_AFTER_POST``: right after
a POST's answer, before its journal write), so their number does not depend on the machine's
speed. ``BULKOPS_PG_IMPORT_ROWS`` changes the row count (the default is the issue's 200,000).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.enginekit import contact_rows, write_csv
from tests.pgkit import StoreDb, fresh_database
from tests.test_server_processes import Proc

ROWS = int(os.environ.get("BULKOPS_PG_IMPORT_ROWS", "200000"))
KILLS = 3
FAULTS = "503=0.03,429=0.03,reset=0.01,lost=0.02,latency=0.05:0.2,stall=0.05:2,seed=14"
HANG_GUARD = 1800.0  # seconds: only a hung process trips it


def _state(db: StoreDb, username: str) -> dict[str, tuple[object, ...]]:
    rows = db.all(
        "SELECT c.email_key, c.FirstName, c.LastName, c.City, c.StateCode, c.status,"
        " (SELECT string_agg(l.name, ',') FROM membership m JOIN list l ON l.id = m.list_id"
        "  WHERE m.contact_id = c.id)"
        " FROM contact c JOIN account a ON a.id = c.account_id WHERE a.username = ?",
        (username,),
    )
    return {str(row[0]): tuple(row[1:]) for row in rows}


@pytest.mark.slow
def test_two_servers_and_a_worker_import_exactly_through_faults_and_kills(
    tmp_path: Path,
) -> None:
    """200,000 rows, faults on, CLI killed 3 times and resumed across two servers: the
    database holds each row once, as written, in the list; the report accounts for all."""
    rows = contact_rows(ROWS, seed=14)
    source = write_csv(tmp_path / "big.csv", rows)
    accounts = tmp_path / "accounts"
    accounts.write_text("crash:pw-crash:key-crash\n")
    with fresh_database() as url:
        db = StoreDb(url, home=tmp_path)
        servers = [
            Proc(
                tmp_path / f"serve{n}.log",
                db,
                *("serve", "--port", "0", "--processes", "2"),
                *("--accounts-file", str(accounts), "--faults", FAULTS),
                *(() if n == 0 else ("--no-worker",)),
            )
            for n in range(2)
        ]
        worker = Proc(tmp_path / "worker.log", db, "worker", "--concurrency", "2")
        try:
            origins = [
                s.wait_for(r"serving the API at (http://\S+?)/ws/\S* with 2").group(1)
                for s in servers
            ]
            run_dir = tmp_path / "run"

            def cli(origin: str, *args: str, kill_after: int | None) -> int:
                env = {
                    **os.environ,
                    "BULKOPS_HOME": str(tmp_path / "cli-home"),
                    "BULKOPS_USERNAME": "crash",
                    "BULKOPS_API_KEY": "key-crash",
                    "BULKOPS_PASSWORD": "pw-crash",
                }
                env.pop("BULKOPS_DB", None)
                if kill_after is not None:
                    env["BULKOPS_TEST_KILL_AFTER_POST"] = str(kill_after)
                proc = subprocess.run(
                    [sys.executable, "-m", "bulkops", *args, "--server", origin, "--quiet"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=HANG_GUARD,
                    check=False,
                )
                assert "Traceback" not in proc.stderr, proc.stderr
                return proc.returncode

            # 40 activities, so that every resume has some left to post when its hook fires.
            common = ("--list", "Crash", "--create-lists", "--max-rows", str(max(50, ROWS // 40)))
            first = cli(
                origins[0], "import", str(source), *common, "--run-dir", str(run_dir), kill_after=3
            )
            assert first == -signal.SIGKILL
            for kill in range(1, KILLS):
                code = cli(origins[kill % 2], "resume", str(run_dir), kill_after=2)
                assert code == -signal.SIGKILL, code
            assert cli(origins[KILLS % 2], "resume", str(run_dir), kill_after=None) == 0
            worker.wait_for(r"worker \S+ running")
            assert worker.stop() == 0
            assert [s.stop() for s in servers] == [0, 0]
        finally:
            for proc in (*servers, worker):
                proc.kill()
        report = json.loads((run_dir / "report.json").read_text())
        counts = report["counts"]
        assert counts["read"] == ROWS
        assert counts["applied"] == ROWS
        assert counts["pending"] == counts["failed"] == counts["rejected"] == 0
        got = _state(db, "crash")
        statuses = {value[4] for value in got.values()}
        assert statuses == {"Active"}
        expected = {
            email.lower(): (first, last, city, state, "Active", "Crash")
            for email, first, last, city, state in rows
        }
        assert got == expected
        (member_count,) = db.one("SELECT member_count FROM list WHERE name = 'Crash'")
        assert member_count == ROWS
        (unfinished,) = db.one(
            "SELECT count(*) FROM activity WHERE status NOT IN ('COMPLETE', 'ERROR')"
        )
        assert unfinished == 0
        logs = "".join(p.text() for p in (*servers, worker))
        assert "Traceback" not in logs
        assert db.password not in logs
