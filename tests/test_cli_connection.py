"""Reaching the server from the CLI: what people type for --server, credentials without a
server, an unreachable server, a credentials file others can read, a port already in use."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clikit import DEMO_ENV, bulkops, served
from tests.serverkit import HANG_GUARD


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``bulkops serve`` (demo account) shared by this module's tests."""
    root = tmp_path_factory.mktemp("served")
    with served(root / "server.db", root / "home") as url:
        yield url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _lists(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize(
    "form",
    [
        "{hostport}",  # no scheme: http for a loopback address
        "http://{hostport}/ws/customers",
        "http://{hostport}/ws/customers/",
        "http://{hostport}/ws/customers/demo",
        "http://{hostport}/ws/customers/DEMO/lists",
    ],
)
def test_server_urls_as_people_paste_them_reach_the_account(
    origin: str, home: Path, tmp_path: Path, form: str
) -> None:
    """No scheme, /ws/customers or the account URL: the export works (no doubled path)."""
    server = form.format(hostport=origin.removeprefix("http://"))
    out = tmp_path / "lists.jsonl"
    result = bulkops(
        "export", "lists", "-o", str(out), "--server", server, "--quiet",
        home=home, env=DEMO_ENV, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {"active", "removed", "do-not-mail"} <= {str(r["id"]) for r in _lists(out)}


def test_a_server_url_naming_another_account_is_a_usage_error(
    origin: str, home: Path, tmp_path: Path
) -> None:
    """…/ws/customers/alice with demo's credentials: exit 64, saying which account is which."""
    result = bulkops(
        "export", "lists", "-o", "x.jsonl", "--server", f"{origin}/ws/customers/alice",
        home=home, env=DEMO_ENV, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 64
    assert "'alice'" in result.stderr
    assert "'demo'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("bulkops-runs/*"))


def test_credentials_without_a_server_are_refused_before_anything_starts(
    home: Path, tmp_path: Path
) -> None:
    """BULKOPS_USERNAME & co. but no BULKOPS_SERVER: exit 64 naming the fix, no embedded
    server (no database created), no 401 from a random port."""
    result = bulkops("export", "lists", "-o", "x.jsonl", home=home, env=DEMO_ENV, cwd=tmp_path)
    assert result.returncode == 64
    assert "no server" in result.stderr
    assert "BULKOPS_SERVER" in result.stderr
    assert "401" not in result.stderr
    assert not (home / "server.db").exists()


def test_an_unreachable_server_is_reported_in_seconds_with_a_line_per_wait(
    home: Path, tmp_path: Path
) -> None:
    """Connection refused: exit 4 long before the old 2 minutes (the subprocess timeout only
    guards against a hang; the client's own bound is tested on a virtual clock in
    test_engine_client), each wait said in words, no stamina log lines."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        result = bulkops(
            "export", "lists", "-o", "x.jsonl", "--server", f"127.0.0.1:{port}",
            home=home, env=DEMO_ENV, cwd=tmp_path, timeout=HANG_GUARD,
        )  # fmt: skip
    assert result.returncode == 4
    waits = [line for line in result.stderr.splitlines() if "retrying in" in line]
    assert waits
    assert all("connection refused" in line for line in waits)
    assert "is the server running" in result.stderr
    assert "stamina" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_credentials_file_others_can_read_draws_a_warning(
    origin: str, home: Path, tmp_path: Path
) -> None:
    """Mode 0644: a warning naming chmod 600; mode 0600: none. Both work."""
    creds = tmp_path / "creds"
    creds.write_text("username = demo\napi_key = demo-key\npassword = demo-password\n")
    creds.chmod(0o644)
    args = ["export", "lists", "--server", origin, "--quiet", "--credentials-file", str(creds)]
    loose = bulkops(*args, "-o", "loose.jsonl", home=home, cwd=tmp_path)
    assert loose.returncode == 0, loose.stderr
    assert "can be read by others" in loose.stderr
    assert "chmod 600" in loose.stderr
    assert "demo-password" not in loose.stderr
    creds.chmod(stat.S_IRUSR | stat.S_IWUSR)
    strict = bulkops(*args, "-o", "strict.jsonl", home=home, cwd=tmp_path)
    assert strict.returncode == 0, strict.stderr
    assert "read by others" not in strict.stderr


def test_serve_on_a_port_in_use_is_one_line_and_exit_4(tmp_path: Path) -> None:
    """No ExceptionGroup traceback: one line naming the address and what to do."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = bulkops(
            "serve", "--port", str(port), "--db", str(tmp_path / "s.db"), "--log-level", "ERROR",
            home=tmp_path / "home",
        )  # fmt: skip
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "address already in use" in lines[0]


def test_a_503_storm_is_retried_with_a_line_per_wait_until_the_stall_timeout(
    tmp_path: Path,
) -> None:
    """Every answer 503: one stderr line per wait (what, why, how long), then exit 4 with
    the server's answer once --stall-timeout is used up (its own bound is tested on a
    virtual clock in test_engine_client)."""
    with served(tmp_path / "s.db", tmp_path / "home", "--faults", "503=1,seed=1") as url:
        result = bulkops(
            "export", "lists", "-o", "x.jsonl", "--server", url, "--stall-timeout", "5",
            home=tmp_path / "home", env=DEMO_ENV, cwd=tmp_path, timeout=HANG_GUARD,
        )  # fmt: skip
    assert result.returncode == 4
    waits = [line for line in result.stderr.splitlines() if "retrying in" in line]
    assert len(waits) >= 2
    for line in waits:
        assert line.startswith(f"bulkops: GET {url}/ws/customers/demo/lists: HTTP 503")
        assert "giving up in" in line
    assert "HTTP 503" in result.stderr.strip().splitlines()[-1]
    assert "stamina" not in result.stderr
