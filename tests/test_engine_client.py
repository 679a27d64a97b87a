"""The engine's HTTP client against the real server: auth, error mapping, URLs, secrets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from bulkops.engine.client import (
    ClientConfig,
    Credentials,
    QuotaExhausted,
    RetryNotice,
    TokenBucket,
    open_client,
)
from bulkops.errors import ApiError, AuthError, ConfigError, NotFound, TransportError
from bulkops.server.app import ServerConfig
from tests.serverkit import (
    API_KEY,
    HANG_GUARD,
    PASSWORD,
    USER,
    RunningServer,
    make_state,
    start_server,
)


def demo(server: RunningServer, **kwargs: object) -> ClientConfig:
    creds = Credentials(username=USER, api_key=API_KEY, password=PASSWORD)
    return ClientConfig(server=server.origin, credentials=creds, **kwargs)  # type: ignore[arg-type]


async def test_basic_credentials_open_the_account(server: RunningServer) -> None:
    """APIKEY%user Basic auth reaches the service document."""
    async with open_client(demo(server)) as client:
        with trio.fail_after(HANG_GUARD):
            response = await client.get("")
    assert response.status_code == 200
    assert client.account_url == f"{server.origin}/ws/customers/demo/"


async def test_wrong_password_is_an_auth_error_and_not_retried(server: RunningServer) -> None:
    """401 maps to AuthError at once (no retries on client errors)."""
    creds = Credentials(username=USER, api_key=API_KEY, password="wrong")
    config = ClientConfig(server=server.origin, credentials=creds)
    async with open_client(config) as client:
        with trio.fail_after(HANG_GUARD), pytest.raises(AuthError) as caught:
            await client.get("")
        assert caught.value.status == 401
        assert client.statistics().requests == 1
    assert "wrong" not in str(caught.value)


async def test_unknown_resources_are_not_found(server: RunningServer) -> None:
    """404 maps to NotFound with the method and a credential-free URL."""
    async with open_client(demo(server)) as client:
        with trio.fail_after(HANG_GUARD), pytest.raises(NotFound) as caught:
            await client.get("no-such-thing?access_token=secret")
    assert caught.value.method == "GET"
    assert caught.value.url is not None
    assert "secret" not in caught.value.url


async def test_the_request_budget_is_enforced(server: RunningServer) -> None:
    """--daily-quota: the request after the budget raises QuotaExhausted."""
    async with open_client(demo(server, daily_quota=2)) as client:
        with trio.fail_after(HANG_GUARD):
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


# -- reaching the server, and retrying ------------------------------------------------------


@pytest.fixture
def patient_clock() -> MockClock:
    """A virtual clock that jumps only after 0.2 s of real idleness (loopback I/O first)."""
    return MockClock(autojump_threshold=0.2)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound by nobody who listens: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_server_that_refuses_connections_is_given_up_within_seconds(
    patient_clock: MockClock, refusing_port: int
) -> None:
    """Default settings: connection refused ends in a TransportError within 10 virtual
    seconds, each wait announced with what and why, the message saying what to check."""
    creds = Credentials(username=USER, api_key=API_KEY, password=PASSWORD)
    config = ClientConfig(server=f"http://127.0.0.1:{refusing_port}", credentials=creds)
    notices: list[RetryNotice] = []
    async with open_client(config) as client:
        client.retry_listeners.append(notices.append)
        start = trio.current_time()
        with pytest.raises(TransportError) as caught:
            await client.get("lists")
        elapsed = trio.current_time() - start
    assert elapsed < 10
    assert notices
    assert client.statistics().retries == len(notices)
    assert all(n.method == "GET" and n.url.endswith("/lists") for n in notices)
    assert all("refused" in n.reason.lower() for n in notices)
    assert "is the server running" in str(caught.value)


async def test_a_5xx_storm_is_retried_with_a_notice_per_wait_until_the_timeout(
    patient_clock: MockClock, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """503 on every request: retried (each wait announced) until retry_timeout, then the 503."""
    state = make_state(tmp_path / "srv", ServerConfig(faults="503=1,seed=1"))
    try:
        running = await start_server(nursery, state)
        notices: list[RetryNotice] = []
        async with open_client(demo(running, retry_timeout=60.0, wait_max=10.0)) as client:
            client.retry_listeners.append(notices.append)
            start = trio.current_time()
            with pytest.raises(ApiError) as caught:
                await client.get("lists")
            elapsed = trio.current_time() - start
    finally:
        state.store.close()
    assert caught.value.status == 503
    assert 40 < elapsed <= 62  # kept going for most of the minute, never past it
    assert len(notices) >= 6
    assert all("HTTP 503" in n.reason and n.wait > 0 for n in notices)
    assert "HTTP 503" in str(notices[0])
    assert "retrying in" in str(notices[0])
    assert client.statistics().retries == len(notices)


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080/", "http://localhost:8080"),
        ("api.example.com", "https://api.example.com"),
        ("http://127.0.0.1:8080/ws/customers", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/ws/customers/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/ws/customers/Demo/", "http://127.0.0.1:8080"),
        ("https://h.example/api/ws/customers/demo/lists/3", "https://h.example/api"),
    ],
)
def test_server_urls_people_paste_lead_to_the_account(given: str, root: str) -> None:
    """A missing scheme, /ws/customers or the account URL: one account URL, no doubled path."""
    config = ClientConfig(server=given, credentials=Credentials(username="demo", token="t"))
    assert config.root == root
    assert config.account_url == f"{root}/ws/customers/demo/"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("http://h/ws/customers/alice", "names the account 'alice'"),
        ("ftp://h", "http:// or https://"),
        ("http://joe:secret@h", "must not hold credentials"),
        ("http://h:port", "no host"),
        ("", "empty"),
    ],
)
def test_server_urls_that_cannot_work_are_clear_errors(given: str, message: str) -> None:
    """Another account's URL, another scheme, credentials in the URL: a ConfigError, no secret."""
    with pytest.raises(ConfigError, match=message) as caught:
        ClientConfig(server=given, credentials=Credentials(username="demo", token="t"))
    assert "secret" not in str(caught.value)


def test_client_errors_do_not_name_command_line_flags() -> None:
    """The Python API's messages speak of settings, not of the CLI's --flags."""
    messages = []
    for make in (
        lambda: Credentials(username=""),
        lambda: Credentials(username="joe"),
        lambda: TokenBucket(0),
    ):
        with pytest.raises(ConfigError) as caught:
            make()
        messages.append(str(caught.value))
    assert not [m for m in messages if "--" in m]
