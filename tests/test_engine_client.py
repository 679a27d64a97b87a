"""The engine's HTTP client against the real server: auth, error mapping, URLs, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bulkops.engine.client import ClientConfig, Credentials, QuotaExhausted, open_client
from bulkops.errors import AuthError, ConfigError, NotFound
from tests.serverkit import API_KEY, PASSWORD, USER, RunningServer


def demo(server: RunningServer, **kwargs: object) -> ClientConfig:
    creds = Credentials(username=USER, api_key=API_KEY, password=PASSWORD)
    return ClientConfig(server=server.origin, credentials=creds, **kwargs)  # type: ignore[arg-type]


async def test_basic_credentials_open_the_account(server: RunningServer) -> None:
    """APIKEY%user Basic auth reaches the service document."""
    async with open_client(demo(server)) as client:
        with trio.fail_after(10):
            response = await client.get("")
    assert response.status_code == 200
    assert client.account_url == f"{server.origin}/ws/customers/demo/"


async def test_wrong_password_is_an_auth_error_and_not_retried(server: RunningServer) -> None:
    """401 maps to AuthError at once (no retries on client errors)."""
    creds = Credentials(username=USER, api_key=API_KEY, password="wrong")
    config = ClientConfig(server=server.origin, credentials=creds)
    async with open_client(config) as client:
        with trio.fail_after(10), pytest.raises(AuthError) as caught:
            await client.get("")
        assert caught.value.status == 401
        assert client.statistics().requests == 1
    assert "wrong" not in str(caught.value)


async def test_unknown_resources_are_not_found(server: RunningServer) -> None:
    """404 maps to NotFound with the method and a credential-free URL."""
    async with open_client(demo(server)) as client:
        with trio.fail_after(10), pytest.raises(NotFound) as caught:
            await client.get("no-such-thing?access_token=secret")
    assert caught.value.method == "GET"
    assert caught.value.url is not None
    assert "secret" not in caught.value.url


async def test_the_request_budget_is_enforced(server: RunningServer) -> None:
    """--daily-quota: the request after the budget raises QuotaExhausted."""
    async with open_client(demo(server, daily_quota=2)) as client:
        with trio.fail_after(10):
            await client.get("")
            await client.get("")
            with pytest.raises(QuotaExhausted):
                await client.get("")


def test_ids_on_any_origin_map_onto_our_server() -> None:
    """Ids from the server's public URL or the legacy origin keep only path and query."""
    creds = Credentials(username="Joe", token="t")
    config = ClientConfig(server="http://127.0.0.1:9/", credentials=creds)
    from bulkops.engine.client import Client

    client = Client(config, http=None)  # type: ignore[arg-type]
    assert client.account_url == "http://127.0.0.1:9/ws/customers/joe/"
    assert client.url("lists?next=x") == "http://127.0.0.1:9/ws/customers/joe/lists?next=x"
    assert (
        client.url("http://api.constantcontact.com/ws/customers/joe/lists/7")
        == "http://127.0.0.1:9/ws/customers/joe/lists/7"
    )
    assert client.url("/ws/customers/joe/contacts?next=ab") == (
        "http://127.0.0.1:9/ws/customers/joe/contacts?next=ab"
    )


def test_credentials_never_show_their_secrets(tmp_path: Path) -> None:
    """repr hides the key, password and token; files and the environment both work."""
    creds = Credentials(username="joe", api_key="k-123", password="p-456")
    assert "k-123" not in repr(creds)
    assert "p-456" not in repr(creds)
    assert creds.authorization().startswith("Basic ")
    path = tmp_path / "creds"
    path.write_text("# mine\nusername = joe\ntoken = 't-789'\n")
    from_file = Credentials.from_file(path)
    assert from_file.authorization() == "Bearer t-789"
    assert "t-789" not in repr(from_file)
    env = {"BULKOPS_USERNAME": "joe", "BULKOPS_API_KEY": "k", "BULKOPS_PASSWORD": "p"}
    assert Credentials.from_env(env).username == "joe"
    with pytest.raises(ConfigError, match="no credentials"):
        Credentials.from_env({"BULKOPS_USERNAME": "joe"})
