"""Helpers to run the real API server in tests: over loopback HTTP or in-process (ASGI)."""

from __future__ import annotations

import base64
from pathlib import Path

import attrs
import httpx
import trio

from bulkops.server.app import ApiState, ServerConfig, create_app
from bulkops.server.auth import AccountSpec, Secret, ensure_account
from bulkops.server.serve import open_state, serve_api

USER = "demo"
PASSWORD = "demo-password"
API_KEY = "demo-key"
DEMO = AccountSpec(username=USER, password=Secret(PASSWORD), api_key=Secret(API_KEY))


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
            base_url=self.base(username), headers=headers, timeout=10, **kwargs
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
        timeout=10,
    )
