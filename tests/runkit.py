"""Helpers for CLI run tests: a real ``bulkops serve`` on 127.0.0.1 and the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

ACCOUNTS = "runs:pw-runs:key-runs\n"


def _wait_for_origin(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 120  # start-up on a busy machine: a hang guard, not a limit
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text() if log.exists() else ""
        if "serving the API at " in text:
            return text.split("serving the API at ", 1)[1].split("/ws/", 1)[0]
        time.sleep(0.05)  # waiting for another process to start, not timing a result
    raise AssertionError("server did not start:\n" + (log.read_text() if log.exists() else ""))


@attrs.frozen
class Cli:
    """The ``bulkops`` entry point, run as a subprocess against one server."""

    origin: str
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "BULKOPS_USERNAME": "runs",
            "BULKOPS_API_KEY": "key-runs",
            "BULKOPS_PASSWORD": "pw-runs",
            "BULKOPS_SERVER": self.origin,
            "BULKOPS_HOME": str(self.cwd / "home"),
        }
        env.pop("BULKOPS_TEST_KILL_AFTER_POST", None)
        return env

    def popen(self, *args: str, **env_extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bulkops", *args],
            env={**self.env(), **env_extra},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bulkops", *args],
            env={**self.env(), **env_extra},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@attrs.frozen
class Server:
    origin: str
    db: Path


def serve(tmp: Path) -> Iterator[Server]:
    """Run ``bulkops serve --port 0`` until the generator is closed."""
    accounts = tmp / "accounts"
    accounts.write_text(ACCOUNTS)
    log = tmp / "server.log"
    db = tmp / "server.db"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulkops",
                "serve",
                "--port",
                "0",
                "--db",
                str(db),
                "--accounts-file",
                str(accounts),
            ],
            stderr=handle,
            stdout=subprocess.DEVNULL,
        )
    try:
        yield Server(origin=_wait_for_origin(proc, log), db=db)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report_of(run_dir: Path) -> dict[str, Any]:
    """The run's ``report.json``."""
    report: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    return report


def assert_balanced(counts: dict[str, int]) -> None:
    """read = applied + failed + rejected + duplicate, nothing pending."""
    assert counts["pending"] == 0, counts
    assert counts["read"] == (
        counts["applied"] + counts["failed"] + counts["rejected"] + counts["duplicate"]
    ), counts


def no_traceback(result: subprocess.CompletedProcess[str] | str) -> None:
    """The CLI never prints a traceback."""
    text = result if isinstance(result, str) else result.stderr + result.stdout
    assert "Traceback" not in text, text
    assert "Exception ignored" not in text, text
