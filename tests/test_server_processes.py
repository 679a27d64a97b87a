"""Many processes on one database, over real HTTP on 127.0.0.1: ``bulkops serve --processes 2``,
separate ``bulkops worker`` processes, workers SIGKILLed mid-apply, throttles shared — on
SQLite and on PostgreSQL (``STORES``; the PostgreSQL URL reaches the processes through
``BULKOPS_DB``, never their argv)."""

from __future__ import annotations

import os
import re
import signal
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
from tests.pgkit import BOTH_STORES, StoreDb
from tests.serverkit import DEMO, basic

STORES = BOTH_STORES

ROWS = 3_000
LIST_URI = "http://api.constantcontact.com/ws/customers/demo/lists/7"
HANG_GUARD = 120.0  # seconds: only a hung process trips it; no outcome depends on timing


@pytest.fixture
def db(tmp_path: Path, store_db: str | None) -> StoreDb:
    """The test's database (SQLite in tmp_path, or a fresh PostgreSQL one) with the demo
    account and its list 7."""
    target = StoreDb(store_db or tmp_path / "server.db", home=tmp_path)
    state = open_state(target.target, ServerConfig(), accounts=[DEMO], data_dir=tmp_path)
    with write_tx(state.store.connection()) as conn:  # type: ignore[attr-defined]
        conn.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'Shared', 'Shared', 0)"
        )
    state.store.close()
    return target


class Proc:
    """A ``bulkops`` subprocess on ``db`` whose stderr goes to a log file."""

    def __init__(
        self, log: Path, db: StoreDb, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        full_env = {**os.environ, **db.env(), **(env or {})}
        full_env.pop("BULKOPS_SERVE_ACCOUNTS", None)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bulkops", args[0], *db.argv(), *args[1:]],
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
def running(
    log: Path, db: StoreDb, *args: str, env: dict[str, str] | None = None
) -> Iterator[Proc]:
    proc = Proc(log, db, *args, env=env)
    try:
        yield proc
    finally:
        proc.kill()


def _serve(tmp_path: Path, db: StoreDb, *extra: str) -> Proc:
    return Proc(tmp_path / "serve.log", db, "serve", "--port", "0", "--processes", "2", *extra)


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


def _applied(db: StoreDb, batch: int) -> int:
    (count,) = db.one(
        "SELECT count(*) FROM contact WHERE email_key >= ? AND email_key < ?",
        (f"b{batch}-", f"b{batch}."),
    )
    return int(count)


def _members(db: StoreDb) -> tuple[int, int]:
    """(membership rows of list 7, the list's member_count)."""
    (members,) = db.one("SELECT count(*) FROM membership WHERE list_id = 7")
    (count,) = db.one("SELECT member_count FROM list WHERE id = 7")
    return int(members), int(count)


def _client(origin: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{origin}/ws/customers/demo/",
        headers={"Authorization": basic()},
        timeout=HANG_GUARD,
    )


def test_no_password_reaches_a_child_s_argv(db: StoreDb) -> None:
    """The processes these tests start get the database through the environment when it is
    a URL: their argv (which ``ps`` shows) never holds it."""
    argv = db.argv()
    assert all("://" not in arg for arg in argv)
    if db.is_postgres:
        assert argv == []
        assert db.env()["BULKOPS_DB"].startswith("postgresql://")


@pytest.mark.slow
def test_two_processes_and_a_separate_worker_import_correctly(tmp_path: Path, db: StoreDb) -> None:
    """Activities posted to either of two HTTP processes (no worker of their own) are run by
    two separate ``bulkops worker`` processes, each exactly once."""
    server = _serve(tmp_path, db, "--no-worker")
    workers = [
        Proc(
            tmp_path / f"worker{n}.log",
            db,
            *("worker", "--poll-interval", "0.1"),
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
        for worker in workers:  # one may have had nothing to do and still be starting up
            worker.wait_for(r"worker \S+ running")
        assert [w.stop() for w in workers] == [0, 0]
        assert server.stop() == 0
    finally:
        for proc in (server, *workers):
            proc.kill()
    assert [_applied(db, batch) for batch in range(6)] == [ROWS] * 6
    completed = sum(
        int(re.search(r"(\d+) completed", w.text()).group(1))  # type: ignore[union-attr]
        for w in workers
    )
    assert completed == 6  # each activity ran once, in one worker or the other
    for proc in (server, *workers):
        assert "Traceback" not in proc.text()
        if db.is_postgres:
            assert db.password not in proc.text()


#: Kills per activity: 10 in all, each activity's later kills hitting workers that had
#: taken it over from a killed one.
KILLS = (4, 3, 3)


@pytest.mark.slow
def test_workers_killed_mid_apply_are_replaced_and_nothing_is_half_applied(
    tmp_path: Path, db: StoreDb
) -> None:
    """Ten SIGKILLs of workers inside an apply's transaction (held by the test hook just
    before COMMIT, so every kill lands there, however fast the machine): each time the
    database holds none of the activity's rows and the list is unchanged; a live worker takes
    the activity over once the lease expires — and may be killed in turn; the last one applies
    it whole, exactly once."""
    server = _serve(tmp_path, db, "--no-worker")
    spawned = 0
    workers: dict[Path, Proc] = {}  # by hold file: each worker holds at its own

    def spawn() -> None:
        nonlocal spawned
        hold = tmp_path / f"hold{spawned}"
        workers[hold] = Proc(
            tmp_path / f"worker{spawned}.log",
            db,
            *("worker", "--lease-seconds", "1", "--poll-interval", "0.1"),
            env={"BULKOPS_TEST_HOLD_FILE": str(hold)},
        )
        spawned += 1

    def holder() -> Path:
        """The hold file of the worker now held before its COMMIT."""
        deadline = time.monotonic() + HANG_GUARD
        while True:
            held = [hold for hold in workers if hold.exists()]
            if held:
                assert len(held) == 1, held  # one lease holder, one apply at a time
                return held[0]
            for proc in workers.values():
                assert proc.process.poll() is None, proc.text()
            assert time.monotonic() < deadline, "no worker reached the hold"
            time.sleep(0.01)

    kills = 0
    try:
        for _ in range(2):
            spawn()
        with _client(_origin(server)) as http:
            for batch, kills_here in enumerate(KILLS):
                before = _members(db)
                path = _post(http, batch)
                for _ in range(kills_here):
                    hold = holder()
                    # Held just before COMMIT: everything written, nothing visible.
                    assert _applied(db, batch) == 0
                    assert _members(db) == before
                    assert b"<Status>RUNNING</Status>" in http.get(path).content
                    workers.pop(hold).kill()
                    hold.unlink()
                    kills += 1
                    spawn()
                # The worker that takes it over now is let through.
                hold = holder()
                assert _applied(db, batch) == 0
                hold.unlink()
                (body,) = _wait_complete(http, [path])
                assert f"<TransactionCount>{ROWS}</TransactionCount>".encode() in body
                assert _applied(db, batch) == ROWS
                assert _members(db) == (before[0] + ROWS, before[1] + ROWS)
        assert kills == 10
        for proc in workers.values():  # the last one spawned may still be starting up:
            proc.wait_for(r"worker \S+ running")  # a SIGTERM then would kill it outright
        assert [proc.stop() for proc in workers.values()] == [0] * len(workers)
        assert server.stop() == 0
    finally:
        for proc in (server, *workers.values()):
            proc.kill()
    assert _members(db) == (len(KILLS) * ROWS, len(KILLS) * ROWS)
    taken_over = sum(
        int(m.group(1))
        for log in tmp_path.glob("worker*.log")
        if (m := re.search(r"(\d+) taken over", log.read_text()))
    )
    # Each kill led to one takeover; the last activity's was by a worker stopped gracefully.
    assert 1 <= taken_over <= kills


#: Seconds of requests in the rate test (the issue's figure).
SPAN = 20.0


@pytest.mark.slow
def test_the_rate_limit_holds_across_two_processes(tmp_path: Path, db: StoreDb) -> None:
    """--rate 5 over two processes, 20 s of requests: the answers that are not 429 never
    exceed the one bucket's bound, 5 per second of the span plus the burst of 5."""
    server = _serve(tmp_path, db, "--rate", "5")
    statuses: list[int] = []
    lock = threading.Lock()
    try:
        origin = _origin(server)
        with _client(origin) as http:
            assert http.get("lists").status_code in (200, 429)  # both children are up
        server.wait_for(r"\[\d+\] serving(?s:.*)\[\d+\] serving")

        def hammer() -> None:
            # A connection per request, so that both processes get some.
            while time.monotonic() - started < SPAN:
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
    print(f"--rate 5, 2 processes: {passed} of {len(statuses)} passed in {elapsed:.1f} s")
    assert set(statuses) <= {200, 429}
    # Every request reached the server within [started, started + elapsed] (a span at
    # least as long as the server saw: a slow machine only loosens the bound); one shared
    # bucket lets through at most its burst plus rate × that span (+1: clock rounding).
    assert passed <= 5 + 5 * elapsed + 1, (passed, elapsed)
    assert passed >= 5  # the burst at least: the limit is not refusing everything
    pids = set(re.findall(r"\[(\d+)\] GET /ws/customers/demo/lists", server.text()))
    assert len(pids) == 2, "one process answered everything: nothing was shared"


@pytest.mark.slow
def test_the_daily_quota_holds_across_two_processes(tmp_path: Path, db: StoreDb) -> None:
    """--daily-quota 7 over two processes: exactly 7 of 20 requests pass."""
    server = _serve(tmp_path, db, "--daily-quota", "7")
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
def test_a_dead_server_process_is_replaced_and_sigterm_stops_all(
    tmp_path: Path, db: StoreDb
) -> None:
    """A child killed while serving is replaced (the port keeps answering); SIGTERM to the
    parent stops every child and the parent exits 0."""
    server = _serve(tmp_path, db)
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


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path, db: StoreDb) -> None:
    """SIGKILL to the parent (it can forward nothing): its children notice and stop, so
    no orphan keeps serving the port."""
    server = _serve(tmp_path, db)
    try:
        _origin(server)
        pids = [
            int(server.wait_for(rf"server process {slot} started \(pid (\d+)\)").group(1))
            for slot in range(2)
        ]
        for pid in pids:
            server.wait_for(rf"\[{pid}\] serving")
        server.kill()
        deadline = time.monotonic() + HANG_GUARD
        while not all(_gone(pid) for pid in pids):
            assert time.monotonic() < deadline, "orphaned server processes"
            time.sleep(0.05)
    finally:
        server.kill()
    assert "supervisor (pid" in server.text()
