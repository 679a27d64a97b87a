"""Server foundation: service document, authentication, routing rules, logging, the CLI."""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from lxml import etree

from bulkops.server.auth import Secret, TokenSpec, ensure_token, hash_secret, verify_secret
from tests.pgkit import BOTH_STORES
from tests.serverkit import (
    API_KEY,
    HANG_GUARD,
    PASSWORD,
    add_account,
    asgi_client,
    basic,
    start_server,
)

STORES = BOTH_STORES

APP_NS = "http://www.w3.org/2007/app"


def at(client: httpx.AsyncClient, path: str) -> str:
    """An absolute URL for a root-relative path on the client's server."""
    return str(client.base_url.copy_with(path=path))


ATOM_NS = "http://www.w3.org/2005/Atom"


@pytest.fixture(params=["http", "asgi"])
async def client(
    request: pytest.FixtureRequest, server_state, nursery
) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The demo account's client, over real HTTP and in-process."""
    if request.param == "http":
        running = await start_server(nursery, server_state)
        async with running.client() as c:
            yield c
    else:
        async with asgi_client(server_state) as c:
            yield c


async def test_service_document_lists_the_collections(client: httpx.AsyncClient) -> None:
    """GET on the account base answers the AtomPub service document."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get("")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{APP_NS}}}service"
    hrefs = [c.get("href") for c in root.iter(f"{{{APP_NS}}}collection")]
    assert "/ws/customers/demo/lists" in hrefs
    assert "/ws/customers/demo/activities" in hrefs
    titles = [t.text for t in root.iter(f"{{{ATOM_NS}}}title")]
    assert "Bulk Activity" in titles


async def test_missing_credentials_get_a_basic_challenge(client: httpx.AsyncClient) -> None:
    """No Authorization header: 401 with WWW-Authenticate: Basic realm=..."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get("", headers={"Authorization": ""})
    assert response.status_code == 401
    assert re.fullmatch(r'Basic realm="[^"]+"', response.headers["www-authenticate"])


@pytest.mark.parametrize(
    "header",
    [
        basic(password="wrong"),
        basic(api_key="wrong-key"),
        basic(username="nobody"),
        "Basic " + base64.b64encode(b"demo:demo-password").decode(),  # no APIKEY% part
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe%demo:x").decode(),  # not UTF-8
        "Digest username=demo",
        "Bearer wrong-token",
    ],
)
async def test_wrong_credentials_are_unauthorized(client: httpx.AsyncClient, header: str) -> None:
    """Bad, malformed or unknown credentials answer 401, never 500."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get("", headers={"Authorization": header})
    assert response.status_code == 401
    assert "www-authenticate" in response.headers


async def test_another_accounts_credentials_are_forbidden(
    client: httpx.AsyncClient, server_state
) -> None:  # type: ignore[no-untyped-def]
    """Valid credentials of account B on account A's URL: 403."""
    add_account(server_state, "other", "other-password", "other-key")
    with trio.fail_after(HANG_GUARD):
        response = await client.get(
            "", headers={"Authorization": basic("other", "other-password", "other-key")}
        )
    assert response.status_code == 403
    with trio.fail_after(HANG_GUARD):
        own = await client.get(
            at(client, "/ws/customers/other/"),
            headers={"Authorization": basic("other", "other-password", "other-key")},
        )
    assert own.status_code == 200


async def test_bearer_tokens_work_for_their_account_only(
    client: httpx.AsyncClient, server_state
) -> None:  # type: ignore[no-untyped-def]
    """A --token for demo opens demo's URL and is forbidden on another account's."""
    add_account(server_state, "other", "other-password", "other-key")
    ensure_token(
        server_state.store.connection(), TokenSpec(username="demo", token=Secret("tok-123"))
    )
    with trio.fail_after(HANG_GUARD):
        ok = await client.get("", headers={"Authorization": "Bearer tok-123"})
        foreign = await client.get(
            at(client, "/ws/customers/other/"), headers={"Authorization": "Bearer tok-123"}
        )
    assert ok.status_code == 200
    assert foreign.status_code == 403


async def test_usernames_in_urls_are_case_insensitive(client: httpx.AsyncClient) -> None:
    """The account path is matched in lower case (spec §1.1)."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(at(client, "/ws/customers/Demo/"))
    assert response.status_code == 200


async def test_base_uri_without_trailing_slash_is_forbidden(client: httpx.AsyncClient) -> None:
    """The real service answered the base URI without its slash with a 403 HTML page."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(at(client, "/ws/customers/demo"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "403 Forbidden" in response.text


async def test_unknown_uris_are_404_and_unsupported_methods_415(client: httpx.AsyncClient) -> None:
    """Unknown resources answer 404; a method a resource lacks answers 415 (spec §11)."""
    with trio.fail_after(HANG_GUARD):
        missing = await client.get("nothing-here")
        wrong_method = await client.post("", content=b"x", headers={"Content-Type": "text/plain"})
    assert missing.status_code == 404
    assert wrong_method.status_code == 415
    assert wrong_method.headers["content-type"].startswith("text/plain")


async def test_content_type_on_a_get_is_ignored(client: httpx.AsyncClient) -> None:
    """Clients of the era sent Content-Type: text/xml on GET; it does no harm."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get("", headers={"Content-Type": "text/xml"})
    assert response.status_code == 200


async def test_log_lines_carry_no_credentials_or_queries(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per request: method, path, status, ms; no secrets, no query string."""
    caplog.set_level(logging.INFO, logger="bulkops.server")
    token_header = "Bearer secret-token-xyz"
    with trio.fail_after(HANG_GUARD):
        await client.get("?access_token=secret-query-token")
        await client.get("", headers={"Authorization": token_header})
    lines = [r.getMessage() for r in caplog.records if r.name == "bulkops.server"]
    request_lines = [
        line for line in lines if re.match(r"GET /ws/customers/demo/ \d{3} [\d.]+ms$", line)
    ]
    assert len(request_lines) == 2, lines
    text = "\n".join(lines)
    for secret in (PASSWORD, API_KEY, "secret-token-xyz", "secret-query-token", basic()):
        assert secret not in text


def _everything_stored(store) -> bytes:  # type: ignore[no-untyped-def]
    """The database's bytes: SQLite's files, or every row of every PostgreSQL table as text."""
    if not store.location.startswith("postgresql://"):
        raw = Path(store.path).read_bytes()
        for path in Path(store.path).parent.glob("server.db*"):
            raw += path.read_bytes()
        return raw
    db = store.connection()
    tables = [
        name
        for (name,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    ]
    assert "credential" in tables
    return b"".join(
        str(row[0]).encode()
        for table in tables
        for row in db.execute(f"SELECT t::text FROM {table} t")
    )


def test_secrets_are_stored_hashed(server_state) -> None:  # type: ignore[no-untyped-def]
    """The database holds salted scrypt hashes, never a password or key."""
    db = server_state.store.connection()
    hashes = [row[0] for row in db.execute("SELECT hash FROM credential")]
    assert hashes
    assert all(h.startswith("scrypt$") for h in hashes)
    raw = _everything_stored(server_state.store)
    assert PASSWORD.encode() not in raw
    assert API_KEY.encode() not in raw
    assert verify_secret("x", hash_secret("x"))
    assert not verify_secret("y", hash_secret("x"))
    assert "demo" not in repr(Secret("demo"))
    assert "demo" not in str(Secret("demo"))


def _wait_for_url(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, list[str]]:
    lines: list[str] = []
    assert proc.stderr is not None
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving the API at (http://\S+?)/ws/", line)
        if match:
            return match.group(1), lines
    raise AssertionError("server did not start:\n" + "".join(lines))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_bulkops_serve_starts_with_the_demo_account_and_stops_cleanly(
    tmp_path: Path, signum: int
) -> None:
    """`bulkops serve` creates the demo account, serves, and exits 0 on SIGTERM/SIGINT."""
    env = {**os.environ, "BULKOPS_HOME": str(tmp_path)}
    env.pop("BULKOPS_SERVE_ACCOUNTS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkops", "serve", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        origin, lines = _wait_for_url(proc)
        assert any("demo account" in line for line in lines)
        response = httpx.get(
            f"{origin}/ws/customers/demo/", headers={"Authorization": basic()}, timeout=HANG_GUARD
        )
        assert response.status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=HANG_GUARD) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "server.db").exists()


def test_bulkops_serve_reads_accounts_from_a_file_not_argv(tmp_path: Path) -> None:
    """Secrets given in --accounts-file work and never appear on the command line."""
    accounts = tmp_path / "accounts"
    accounts.write_text("# name:password:key\nacme:s3cret-pw:key-123\n")
    tokens = tmp_path / "tokens"
    tokens.write_text("acme:tok-acme\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkops",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "x.db"),
            "--accounts-file",
            str(accounts),
            "--tokens-file",
            str(tokens),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        origin, lines = _wait_for_url(proc)
        assert not any("demo account" in line for line in lines)
        ok = httpx.get(
            f"{origin}/ws/customers/acme/",
            headers={"Authorization": basic("acme", "s3cret-pw", "key-123")},
            timeout=HANG_GUARD,
        )
        bearer = httpx.get(
            f"{origin}/ws/customers/acme/",
            headers={"Authorization": "Bearer tok-acme"},
            timeout=HANG_GUARD,
        )
        assert (ok.status_code, bearer.status_code) == (200, 200)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"s3cret-pw" not in cmdline
        assert b"tok-acme" not in cmdline
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_GUARD) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_account_spec_is_a_usage_error_that_hides_the_secret(tmp_path: Path) -> None:
    """A malformed --account exits 64 and does not echo what was given."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bulkops",
            "serve",
            "--db",
            str(tmp_path / "x.db"),
            "--account",
            "acme:only-two",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert proc.returncode == 64
    assert "NAME:PASSWORD:APIKEY" in proc.stderr
    assert "only-two" not in proc.stderr
