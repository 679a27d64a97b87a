"""SIGKILL during a 40,000-row activity: after a restart it is applied exactly once, never half."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bulkops.server.app import ServerConfig
from bulkops.server.serve import open_state
from bulkops.server.store import write_tx
from tests.serverkit import DEMO, basic

ROWS = 40_000
ACTIVITIES = 5  # an activity applies in well under a second: some must still wait
ATOM_STATUS = re.compile(rb"<Status>([A-Z]+)</Status>")


def _start(db_path: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``bulkops serve`` on the database, logging to a file; return it and its origin."""
    env = {**os.environ}
    env.pop("BULKOPS_SERVE_ACCOUNTS", None)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "serve", "--port", "0", "--db", str(db_path)],
            env=env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        text = log_path.read_bytes()[offset:].decode("utf-8", "replace")
        match = re.search(r"serving the API at (http://\S+?)/ws/", text)
        if match:
            return proc, match.group(1)
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError("server did not start:\n" + log_path.read_text("utf-8", "replace"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _data(batch: int) -> str:
    rows = (f"b{batch}-{i}@example.org,First{i},City{i % 97}" for i in range(ROWS))
    return "Email Address,First Name,City\n" + "\n".join(rows)


def _applied(db: sqlite3.Connection, batch: int) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM contact WHERE email_key >= ? AND email_key < ?",
        (f"b{batch}-", f"b{batch}."),
    ).fetchone()
    return int(count)


@pytest.mark.slow
def test_sigkill_mid_activity_applies_it_exactly_once_or_not_at_all(tmp_path: Path) -> None:
    """Kill -9 while a 40,000-row SV_ADD runs; the database holds each activity whole or not
    at all, and after a restart every activity completes exactly once."""
    db_path = tmp_path / "server.db"
    state = open_state(db_path, ServerConfig(), accounts=[DEMO])
    with write_tx(state.store.connection()) as db:
        db.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'Crash', 'Crash', 0)"
        )
    state.store.close()
    list_uri = "http://api.constantcontact.com/ws/customers/demo/lists/7"
    rng = random.Random(20240611)

    proc, origin = _start(db_path, tmp_path / "server.log")
    base = f"{origin}/ws/customers/demo/"
    locations: list[str] = []
    try:
        with httpx.Client(base_url=base, headers={"Authorization": basic()}, timeout=30) as http:
            for batch in range(ACTIVITIES):
                response = http.post(
                    "activities",
                    data={"activityType": "SV_ADD", "data": _data(batch), "lists": list_uri},
                )
                assert response.status_code == 201, response.text
                locations.append(response.headers["location"])
            # Wait until one is RUNNING, then kill within its apply.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                statuses = [
                    ATOM_STATUS.search(http.get(loc).content).group(1)  # type: ignore[union-attr]
                    for loc in locations
                ]
                if b"RUNNING" in statuses:
                    break
                time.sleep(0.002)
            else:
                raise AssertionError("no activity was seen RUNNING")
            time.sleep(rng.uniform(0.02, 0.25))
        proc.send_signal(signal.SIGKILL)
    finally:
        _stop(proc)

    # The database as the kill left it (SQLite rolls back the unfinished transaction).
    db = sqlite3.connect(db_path)
    try:
        status_at_kill = dict(db.execute("SELECT seq, status FROM activity").fetchall())
        for seq in range(1, ACTIVITIES + 1):
            applied = _applied(db, seq - 1)
            assert applied in (0, ROWS), f"activity {seq} half applied: {applied} rows"
            assert (applied == ROWS) == (status_at_kill[seq] == "COMPLETE"), status_at_kill
        (members,) = db.execute("SELECT count(*) FROM membership WHERE list_id = 7").fetchone()
        (member_count,) = db.execute("SELECT member_count FROM list WHERE id = 7").fetchone()
        assert member_count == members
    finally:
        db.close()
    unfinished = [seq for seq, status in status_at_kill.items() if status != "COMPLETE"]
    assert unfinished, "the kill came after every activity had completed; nothing was tested"

    # Restart: RUNNING goes back to QUEUED and every activity completes, once.
    proc, origin = _start(db_path, tmp_path / "server.log")
    try:
        with httpx.Client(headers={"Authorization": basic()}, timeout=30) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                bodies = [http.get(origin + httpx.URL(loc).path).content for loc in locations]
                if all(b"<Status>COMPLETE</Status>" in body for body in bodies):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("activities did not complete after the restart")
        for body in bodies:
            assert b"<TransactionCount>40000</TransactionCount>" in body
            assert b"<Error>" not in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _stop(proc)
    db = sqlite3.connect(db_path)
    try:
        assert [_applied(db, batch) for batch in range(ACTIVITIES)] == [ROWS] * ACTIVITIES
        (members,) = db.execute("SELECT count(*) FROM membership WHERE list_id = 7").fetchone()
        (member_count,) = db.execute("SELECT member_count FROM list WHERE id = 7").fetchone()
        assert members == member_count == ROWS * ACTIVITIES
    finally:
        db.close()
