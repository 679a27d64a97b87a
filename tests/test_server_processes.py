"""Many processes on one database, over real HTTP on 127.0.0.1: ``bulkops serve --processes 2``,
separate ``bulkops worker`` processes, a worker SIGKILLed mid-apply, throttles shared."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bulkops.server.app import ServerConfig
from bulkops.server.serve import open_state
from bulkops.server.store import write_tx
from tests.serverkit import DEMO, basic

ROWS = 3_000
LIST_URI = "http://api.constantcontact.com/ws/customers/demo/lists/7"
HANG_GUARD = 120.0  # seconds: only a hung process trips it; no outcome depends on timing


def _prepare(db_path: Path) -> None:
    state = open_state(db_path, ServerConfig(), accounts=[DEMO])
    with write_tx(state.store.connection()) as db:  # type: ignore[attr-defined]
        db.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'Shared', 'Shared', 0)"
        )
    state.store.close()


class Proc:
    """A ``bulkops`` subprocess whose stderr goes to a log file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        full_env = {**os.environ, **(env or {})}
        full_env.pop("BULKOPS_SERVE_ACCOUNTS", None)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bulkops", *args],
                env=full_env,
                stderr=out,
                stdout=subprocess.DEVNULL,
            )

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first match of ``pattern`` in the log, once it is there."""
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            assert self.process.poll() is None, f"exited early:\n{self.text()}"
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} never logged:\n{self.text()}")

    def stop(self) -> int:
        """SIGTERM, then its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=HANG_GUARD)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=HANG_GUARD)


@contextmanager
def running(log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = Proc(log, *args, env=env)
    try:
        yield proc
    finally:
        proc.kill()


def _serve(tmp_path: Path, db_path: Path, *extra: str) -> Proc:
    return Proc(
        tmp_path / "serve.log",
        "serve",
        "--port",
        "0",
        "--db",
        str(db_path),
        "--processes",
        "2",
        *extra,
    )


def _origin(server: Proc) -> str:
    return server.wait_for(r"serving the API at (http://\S+?)/ws/").group(1)


def _post(http: httpx.Client, batch: int) -> str:
    data = "Email Address,First Name\n" + "\n".join(
        f"b{batch}-{i}@example.org,F{i}" for i in range(ROWS)
    )
    response = http.post(
        "activities", data={"activityType": "SV_ADD", "data": data, "lists": LIST_URI}
    )
    assert response.status_code == 201, response.text
    return str(http.base_url.copy_with(path=httpx.URL(response.headers["location"]).path))


def _wait_complete(http: httpx.Client, paths: list[str]) -> list[bytes]:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        bodies = [http.get(path).content for path in paths]
        if all(b"<Status>COMPLETE</Status>" in body for body in bodies):
            return bodies
        time.sleep(0.05)
    raise AssertionError(f"not all complete: {bodies}")


def _applied(db_path: Path, batch: int) -> int:
    db = sqlite3.connect(db_path)
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM contact WHERE email_key >= ? AND email_key < ?",
            (f"b{batch}-", f"b{batch}."),
        ).fetchone()
        return int(count)
    finally:
        db.close()


def _client(origin: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{origin}/ws/customers/demo/", headers={"Authorization": basic()}, timeout=60
    )


@pytest.mark.slow
def test_two_processes_and_a_separate_worker_import_correctly(tmp_path: Path) -> None:
    """Activities posted to either of two HTTP processes (no worker of their own) are run by
    two separate ``bulkops worker`` processes, each exactly once."""
    db_path = tmp_path / "server.db"
    _prepare(db_path)
    server = _serve(tmp_path, db_path, "--no-worker")
    workers = [
        Proc(
            tmp_path / f"worker{n}.log",
            *("worker", "--db", str(db_path), "--poll-interval", "0.1"),
            *("--concurrency", str(n + 1)),
        )
        for n in range(2)
    ]
    try:
        with _client(_origin(server)) as http:
            paths = [_post(http, batch) for batch in range(6)]
            bodies = _wait_complete(http, paths)
        for body in bodies:
            assert f"<TransactionCount>{ROWS}</TransactionCount>".encode() in body
        assert [w.stop() for w in workers] == [0, 0]
        assert server.stop() == 0
    finally:
        for proc in (server, *workers):
            proc.kill()
    assert [_applied(db_path, batch) for batch in range(6)] == [ROWS] * 6
    completed = sum(
        int(re.search(r"(\d+) completed", w.text()).group(1))  # type: ignore[union-attr]
        for w in workers
    )
    assert completed == 6  # each activity ran once, in one worker or the other


@pytest.mark.slow
def test_a_worker_killed_mid_apply_is_replaced_and_nothing_is_half_applied(
    tmp_path: Path,
) -> None:
    """Three times: a worker SIGKILLed inside its apply's transaction (just before COMMIT)
    leaves the activity RUNNING with none of its rows; a worker already running takes it over
    once the lease expires and applies it whole."""
    db_path = tmp_path / "server.db"
    _prepare(db_path)
    hold = tmp_path / "hold"
    server = _serve(tmp_path, db_path, "--no-worker")
    try:
        with _client(_origin(server)) as http:
            for kill in range(3):
                path = _post(http, kill)
                victim = Proc(
                    tmp_path / f"victim{kill}.log",
                    *("worker", "--db", str(db_path), "--lease-seconds", "1"),
                    env={"BULKOPS_TEST_HOLD_FILE": str(hold)},
                )
                rescuer = None
                try:
                    deadline = time.monotonic() + HANG_GUARD
                    while not hold.exists():  # the victim's hook wrote the activity id
                        assert time.monotonic() < deadline, victim.text()
                        time.sleep(0.01)
                    # Held just before COMMIT: everything written, nothing visible.
                    assert _applied(db_path, kill) == 0
                    rescuer = Proc(
                        tmp_path / f"rescuer{kill}.log",
                        *("worker", "--db", str(db_path), "--lease-seconds", "1"),
                        *("--poll-interval", "0.1"),
                    )
                    rescuer.wait_for(r"worker \S+ running")
                    victim.kill()
                    hold.unlink()
                    (body,) = _wait_complete(http, [path])
                    assert f"<TransactionCount>{ROWS}</TransactionCount>".encode() in body
                    assert _applied(db_path, kill) == ROWS
                    assert rescuer.stop() == 0
                    assert "1 taken over" in rescuer.text()
                finally:
                    victim.kill()
                    if rescuer is not None:
                        rescuer.kill()
        assert server.stop() == 0
    finally:
        server.kill()
    db = sqlite3.connect(db_path)
    try:
        (members,) = db.execute("SELECT count(*) FROM membership WHERE list_id = 7").fetchone()
        (count,) = db.execute("SELECT member_count FROM list WHERE id = 7").fetchone()
        assert members == count == 3 * ROWS
    finally:
        db.close()


@pytest.mark.slow
def test_the_rate_limit_holds_across_two_processes(tmp_path: Path) -> None:
    """--rate 5 over two processes: the answers that are not 429 never exceed the one
    bucket's bound, 5 per second of the measured span plus the burst of 5."""
    db_path = tmp_path / "server.db"
    _prepare(db_path)
    server = _serve(tmp_path, db_path, "--rate", "5")
    statuses: list[int] = []
    lock = threading.Lock()
    try:
        origin = _origin(server)
        with _client(origin) as http:
            assert http.get("lists").status_code in (200, 429)  # both children are up
        server.wait_for(r"\[\d+\] serving(?s:.*)\[\d+\] serving")

        def hammer() -> None:
            # A connection per request, so that both processes get some.
            for _ in range(40):
                with _client(origin) as http:
                    status = http.get("lists").status_code
                with lock:
                    statuses.append(status)

        started = time.monotonic()
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert server.stop() == 0
    finally:
        server.kill()
    passed = sum(1 for status in statuses if status != 429)
    assert set(statuses) <= {200, 429}
    # Every request reached the server within [started, started + elapsed]; one shared
    # bucket lets through at most its burst plus rate × that span (+1: clock rounding).
    assert passed <= 5 + 5 * elapsed + 1, (passed, elapsed)
    assert passed >= 5  # the burst at least: the limit is not refusing everything
    pids = set(re.findall(r"\[(\d+)\] GET /ws/customers/demo/lists", server.text()))
    assert len(pids) == 2, "one process answered everything: nothing was shared"


@pytest.mark.slow
def test_the_daily_quota_holds_across_two_processes(tmp_path: Path) -> None:
    """--daily-quota 7 over two processes: exactly 7 of 20 requests pass."""
    db_path = tmp_path / "server.db"
    _prepare(db_path)
    server = _serve(tmp_path, db_path, "--daily-quota", "7")
    try:
        origin = _origin(server)
        statuses = []
        for _ in range(20):
            with _client(origin) as http:
                statuses.append(http.get("lists").status_code)
        assert server.stop() == 0
    finally:
        server.kill()
    assert statuses.count(200) == 7
    assert statuses.count(429) == 13


@pytest.mark.slow
def test_a_dead_server_process_is_replaced_and_sigterm_stops_all(tmp_path: Path) -> None:
    """A child killed while serving is replaced (the port keeps answering); SIGTERM to the
    parent stops every child and the parent exits 0."""
    db_path = tmp_path / "server.db"
    _prepare(db_path)
    server = _serve(tmp_path, db_path)
    try:
        origin = _origin(server)
        first = server.wait_for(r"server process 0 started \(pid (\d+)\)").group(1)
        server.wait_for(rf"\[{first}\] serving")
        os.kill(int(first), signal.SIGKILL)
        server.wait_for(r"server process 0 exited with status -9; starting another")
        replacement = server.wait_for(
            r"server process 0 started \(pid (\d+)\)(?s:.*)"
            r"server process 0 started \(pid (\d+)\)"
        ).group(2)
        server.wait_for(rf"\[{replacement}\] serving")
        with _client(origin) as http:
            assert all(http.get("lists").status_code == 200 for _ in range(5))
        assert server.stop() == 0
        for pid in (replacement,):
            with pytest.raises(ProcessLookupError):
                os.kill(int(pid), 0)
    finally:
        server.kill()
