"""Helpers to run the real API server in tests: over loopback HTTP or in-process (ASGI)."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import httpx
import trio

from bulkops.server.app import ApiState, ServerConfig, create_app
from bulkops.server.auth import AccountSpec, Secret, ensure_account
from bulkops.server.serve import open_state, serve_api
from tests.pgkit import StoreDb

USER = "demo"
PASSWORD = "demo-password"
API_KEY = "demo-key"
DEMO = AccountSpec(username=USER, password=Secret(PASSWORD), api_key=Secret(API_KEY))

#: Seconds a hang guard allows (``trio.fail_after``, HTTP client timeouts, waits for another
#: process): only a hung test trips it. A machine busy with other work can be many times
#: slower than an idle one, so no outcome may depend on it.
HANG_GUARD = 120.0


def basic(username: str = USER, password: str = PASSWORD, api_key: str = API_KEY) -> str:
    """An ``Authorization`` header value for HTTP Basic ``APIKEY%user:password``."""
    raw = f"{api_key}%{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def make_state(
    tmp_path: Path, config: ServerConfig | None = None, *, db: str | None = None, **kwargs: object
) -> ApiState:
    """A fresh server state with the demo account: on a SQLite file in ``tmp_path``, or on
    the PostgreSQL database ``db`` (a URL; export files go to ``tmp_path``)."""
    return open_state(
        db or tmp_path / "server.db",
        config or ServerConfig(**kwargs),  # type: ignore[arg-type]
        accounts=[DEMO],
        data_dir=tmp_path,
    )


def add_account(state: ApiState, username: str, password: str, api_key: str) -> None:
    """Create another account in a running server's database."""
    spec = AccountSpec(username=username, password=Secret(password), api_key=Secret(api_key))
    ensure_account(state.store.connection(), spec)


@attrs.frozen
class RunningServer:
    """A server listening on loopback."""

    origin: str
    state: ApiState

    def base(self, username: str = USER) -> str:
        """The account's base URI, with its trailing slash."""
        return f"{self.origin}/ws/customers/{username}/"

    def client(self, username: str = USER, **kwargs: object) -> httpx.AsyncClient:
        """An httpx client for the account, authenticated as the demo user by default."""
        headers = {"Authorization": basic()}
        headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
        return httpx.AsyncClient(
            base_url=self.base(username), headers=headers, timeout=HANG_GUARD, **kwargs
        )  # type: ignore[arg-type]


async def start_server(nursery: trio.Nursery, state: ApiState) -> RunningServer:
    """Start ``serve_api`` on 127.0.0.1, port 0, in ``nursery``."""
    origin = await nursery.start(serve_api, state)
    return RunningServer(origin=origin, state=state)


def asgi_client(state: ApiState, username: str = USER) -> httpx.AsyncClient:
    """An httpx client talking to the app in-process through httpx's ASGI transport."""
    transport = httpx.ASGITransport(app=create_app(state))  # type: ignore[arg-type]
    return httpx.AsyncClient(
        transport=transport,
        base_url=f"http://testserver/ws/customers/{username}/",
        headers={"Authorization": basic()},
        timeout=HANG_GUARD,
    )


@attrs.frozen
class ServeProcess:
    """A ``bulkops serve`` child process listening on loopback."""

    origin: str
    pid: int
    log: Path


@contextmanager
def serve_subprocess(
    tmp_path: Path, *args: str, db: StoreDb | None = None
) -> Iterator[ServeProcess]:
    """``bulkops serve --port 0 ARGS`` in a child process with the demo account, on ``db``
    (a SQLite file or a PostgreSQL URL, handed over as :class:`StoreDb` does — a URL never
    in argv; default ``tmp_path/server.db``), its stderr in ``tmp_path/serve.log``. Stopped
    with SIGTERM at the end; then its log must hold no traceback."""
    db = db or StoreDb(tmp_path / "server.db", home=tmp_path)
    env = {**os.environ, **db.env(), "BULKOPS_SERVE_ACCOUNTS": f"{USER}:{PASSWORD}:{API_KEY}"}
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "bulkops", "serve", "--port", "0", *db.argv(), *args]
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + HANG_GUARD  # start-up on a busy machine, not a limit
        while not (found := re.search(r"serving the API at (http://\S+?)/ws/", log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # waiting for another process to start, not timing a result
        yield ServeProcess(origin=found.group(1), pid=proc.pid, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert not db.password or db.password not in text
