"""Helpers for CLI tests: the real ``bulkops`` entry point in a child process, and a real
``bulkops serve`` on 127.0.0.1 (port 0) for it to talk to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.serverkit import HANG_GUARD

#: The demo account ``bulkops serve`` creates on a new database.
DEMO_ENV = {
    "BULKOPS_USERNAME": "demo",
    "BULKOPS_API_KEY": "demo-key",
    "BULKOPS_PASSWORD": "demo-password",
}


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any BULKOPS_ variable, with ``BULKOPS_HOME=home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    env["BULKOPS_HOME"] = str(home)
    env.update(extra or {})
    return env


def bulkops(
    *args: str,
    home: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bulkops ARGS`` (``timeout`` only guards against a hang)."""
    return subprocess.run(
        [sys.executable, "-m", "bulkops", *args],
        env=clean_env(home, env),
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def served(db: Path, home: Path, *extra: str) -> Iterator[str]:
    """``bulkops serve --port 0 --db DB`` in a child process; yields its origin."""
    log = db.with_suffix(".log")
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "serve", "--port", "0", "--db", str(db), *extra],
            env=clean_env(home),
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )
    try:
        deadline = time.monotonic() + 120  # start-up on a busy machine: a hang guard, not a limit
        while True:
            text = log.read_text() if log.exists() else ""
            if "serving the API at " in text:
                yield text.split("serving the API at ", 1)[1].split("/ws/", 1)[0]
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{text}")
            time.sleep(0.05)  # waiting for another process to start, not timing a result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=HANG_GUARD)  # a hang guard: a busy machine stops it slowly
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
