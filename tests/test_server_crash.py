"""SIGKILL during a 40,000-row activity: after a restart it is applied exactly once, never half.

The kill is not timed: the server runs with ``BULKOPS_TEST_HOLD_FILE`` (the worker's test-only
hook, :func:`bulkops.server.worker._hold_from_environment`), so each activity, its rows
applied and not yet committed, writes its id to that file and waits while it exists. The test
lets the first activities commit by deleting the file, and kills the server while the next
one holds: one point, the same in every run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from bulkops.server.app import ApiState, ServerConfig
from bulkops.server.serve import open_state
from bulkops.server.store import write_tx
from tests.pgkit import BOTH_STORES, StoreDb
from tests.serverkit import DEMO, HANG_GUARD, asgi_client, basic

STORES = BOTH_STORES

ROWS = 40_000
ACTIVITIES = 5
KILLED = 3  # the activity (seq) killed with its rows applied and not committed
ATOM_STATUS = re.compile(rb"<Status>([A-Z]+)</Status>")


def _start(
    db: StoreDb, log_path: Path, hold_file: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``bulkops serve`` on the database, logging to a file; return it and its origin.
    With ``hold_file``, the worker holds each activity before its commit (module docstring)."""
    env = {**os.environ, **db.env()}
    env.pop("BULKOPS_SERVE_ACCOUNTS", None)
    env.pop("BULKOPS_TEST_HOLD_FILE", None)
    if hold_file is not None:
        env["BULKOPS_TEST_HOLD_FILE"] = str(hold_file)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "serve", "--port", "0", *db.argv()],
            env=env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 60  # a guard against a hang, not a timing condition
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
    proc.wait(timeout=HANG_GUARD)


def _data(batch: int) -> str:
    rows = (f"b{batch}-{i}@example.org,First{i},City{i % 97}" for i in range(ROWS))
    return "Email Address,First Name,City\n" + "\n".join(rows)


def _held(hold_file: Path, proc: subprocess.Popen[bytes]) -> str:
    """Wait until an activity holds before its commit (the hook wrote its id); return the id."""
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing condition
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            held = hold_file.read_text()
        except FileNotFoundError:
            held = ""
        if held:
            return held
        time.sleep(0.005)
    raise AssertionError("no activity reached its commit")


async def _post_activities(state: ApiState) -> list[str]:
    """POST the ACTIVITIES SV_ADDs through the app in-process; their locations' paths."""
    list_uri = "http://api.constantcontact.com/ws/customers/demo/lists/7"
    locations = []
    async with asgi_client(state) as client:
        for batch in range(ACTIVITIES):
            response = await client.post(
                "activities",
                data={"activityType": "SV_ADD", "data": _data(batch), "lists": list_uri},
            )
            assert response.status_code == 201, response.text
            locations.append(httpx.URL(response.headers["location"]).path)
    return locations


def _applied(db: StoreDb, batch: int) -> int:
    (count,) = db.one(
        "SELECT count(*) FROM contact WHERE email_key >= ? AND email_key < ?",
        (f"b{batch}-", f"b{batch}."),
    )
    return int(count)


def _members(db: StoreDb) -> tuple[int, int]:
    """(membership rows of list 7, the list's member_count)."""
    (members,) = db.one("SELECT count(*) FROM membership WHERE list_id = 7")
    (member_count,) = db.one("SELECT member_count FROM list WHERE id = 7")
    return int(members), int(member_count)


@pytest.mark.slow
def test_sigkill_mid_activity_applies_it_exactly_once_or_not_at_all(
    tmp_path: Path, store_db: str | None
) -> None:
    """Kill -9 while a 40,000-row SV_ADD runs; the database holds each activity whole or not
    at all, and after a restart every activity completes exactly once."""
    db = StoreDb(store_db or tmp_path / "server.db", home=tmp_path)
    state = open_state(db.target, ServerConfig(), accounts=[DEMO], data_dir=tmp_path)
    with write_tx(state.store.connection()) as conn:  # type: ignore[attr-defined]
        conn.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'Crash', 'Crash', 0)"
        )
    # Every activity is POSTed (in-process, no worker running) before the server starts: a
    # POST could not be stored while the worker holds the write lock of an activity.
    locations = trio.run(_post_activities, state)
    state.store.close()
    hold_file = tmp_path / "holding"

    proc, origin = _start(db, tmp_path / "server.log", hold_file)
    try:
        with httpx.Client(
            base_url=origin, headers={"Authorization": basic()}, timeout=HANG_GUARD
        ) as http:
            # Let the activities before KILLED commit, then kill while KILLED holds.
            for seq in range(1, KILLED + 1):
                held = _held(hold_file, proc)
                assert locations[seq - 1].endswith("/" + held), (seq, held)
                statuses = [
                    ATOM_STATUS.search(http.get(loc).content).group(1)  # type: ignore[union-attr]
                    for loc in locations
                ]
                assert statuses[seq - 1] == b"RUNNING", statuses
                if seq < KILLED:
                    hold_file.unlink()  # it commits; the next one writes its own id here
        proc.send_signal(signal.SIGKILL)
    finally:
        _stop(proc)

    # The database as the kill left it (the unfinished transaction is rolled back).
    status_at_kill = dict(db.all("SELECT seq, status FROM activity"))
    for seq in range(1, ACTIVITIES + 1):
        applied = _applied(db, seq - 1)
        assert applied in (0, ROWS), f"activity {seq} half applied: {applied} rows"
        assert (applied == ROWS) == (status_at_kill[seq] == "COMPLETE"), status_at_kill
    members, member_count = _members(db)
    assert member_count == members
    assert status_at_kill == {
        seq: "COMPLETE" if seq < KILLED else "RUNNING" if seq == KILLED else "QUEUED"
        for seq in range(1, ACTIVITIES + 1)
    }, status_at_kill

    # Restart: RUNNING goes back to QUEUED and every activity completes, once.
    proc, origin = _start(db, tmp_path / "server.log")
    try:
        with httpx.Client(headers={"Authorization": basic()}, timeout=HANG_GUARD) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                bodies = [http.get(origin + loc).content for loc in locations]
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
    assert [_applied(db, batch) for batch in range(ACTIVITIES)] == [ROWS] * ACTIVITIES
    assert _members(db) == (ROWS * ACTIVITIES, ROWS * ACTIVITIES)
    log = (tmp_path / "server.log").read_text("utf-8", "replace")
    assert "Traceback" not in log
    if db.is_postgres:
        assert db.password not in log
