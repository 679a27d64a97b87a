"""``bulkops clear`` asks before it empties lists: on a terminal, a y/N question; without a
terminal, ``--yes`` or a refusal (the real entry point, on the embedded server)."""

from __future__ import annotations

import csv
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clikit import bulkops, clean_env

SAMPLES = Path(__file__).parent.parent / "samples"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A BULKOPS_HOME whose embedded database holds list Newsletter with 120 members."""
    home = tmp_path / "home"
    result = bulkops(
        "import", str(SAMPLES / "contacts.csv"), "--list", "Newsletter", "--create-lists",
        "--quiet", "--run-dir", str(tmp_path / "import"), home=home, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return home


def members(home: Path, tmp_path: Path, name: str) -> int:
    out = tmp_path / f"{name}.csv"
    result = bulkops(
        "export", "--list", "Newsletter", "--via", "feed", "-o", str(out), "--quiet",
        "--run-dir", str(tmp_path / name), home=home, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_without_a_terminal_clear_needs_yes(home: Path, tmp_path: Path) -> None:
    """stdin not a terminal, no --yes: exit 64 saying to add --yes; nothing removed."""
    result = bulkops("clear", "--list", "Newsletter", home=home, cwd=tmp_path)
    assert result.returncode == 64
    assert "not a terminal" in result.stderr
    assert "--yes" in result.stderr
    assert members(home, tmp_path, "after-refusal") == 120


def test_on_a_terminal_no_keeps_the_members(home: Path, tmp_path: Path) -> None:
    """Answering n on a terminal: exit 1, "nothing cleared", every member still there."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "clear", "--list", "Newsletter"],
            env=clean_env(home),
            cwd=tmp_path,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(master, b"n\n")
        _out, err = proc.communicate(timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 1, err
    assert "remove every member of Newsletter? [y/N]" in err
    assert "nothing cleared" in err
    assert members(home, tmp_path, "after-no") == 120


def test_yes_clears_without_asking(home: Path, tmp_path: Path) -> None:
    """--yes: no question, the list is empty afterwards."""
    result = bulkops(
        "clear", "--list", "Newsletter", "--yes", "--quiet", "--run-dir",
        str(tmp_path / "clear"), home=home, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 2), result.stderr
    assert "[y/N]" not in result.stderr
    assert members(home, tmp_path, "after-yes") == 0
