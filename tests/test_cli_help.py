"""What ``bulkops --help`` and ``-V`` tell a new user, help for every option, and ``seed``
defaulting to the database ``serve`` and the embedded server use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bulkops.__main__ import COMMANDS, main_parser
from bulkops._version import __version__
from tests.clikit import bulkops


def test_top_level_help_has_examples_exit_codes_and_environment(tmp_path: Path) -> None:
    """`bulkops --help`: examples, every exit code, the environment variables."""
    result = bulkops("--help", home=tmp_path / "home")
    assert result.returncode == 0
    text = result.stdout
    for section in ("examples:", "exit codes:", "environment:"):
        assert section in text
    assert "bulkops import contacts.csv --list Newsletter" in text
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "64 "):
        assert f"\n  {code}" in text
    for name in ("BULKOPS_SERVER", "BULKOPS_USERNAME", "BULKOPS_TOKEN", "BULKOPS_HOME"):
        assert name in text


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_flags(tmp_path: Path, flag: str) -> None:
    """-V and --version print the version and exit 0."""
    result = bulkops(flag, home=tmp_path / "home")
    assert result.returncode == 0
    assert result.stdout.strip() == f"bulkops {__version__}"


def test_every_option_of_every_command_has_help() -> None:
    """No option or argument of any command shows up in --help without a description."""
    parser = main_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == set(COMMANDS)
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help
    ]
    assert missing == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_commands_help_prints(command: str) -> None:
    """``bulkops COMMAND --help`` formats (a bare ``%`` in a help text made argparse raise)."""
    parser = main_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = commands.choices[command].format_help()
    assert text.startswith("usage:")


def test_seed_without_db_fills_the_embedded_database(tmp_path: Path) -> None:
    """`bulkops seed` (no --db, no --account) fills $BULKOPS_HOME/server.db's demo account,
    and the embedded server (as the demo account) then sees the seeded lists."""
    home = tmp_path / "home"
    seeded = bulkops(
        "seed", "--contacts", "30", "--lists", "2", "--campaigns", "0", "--json",
        home=home, cwd=tmp_path,
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    assert json.loads(seeded.stdout)["account"] == "demo"
    assert (home / "server.db").exists()
    exported = bulkops("export", "lists", "-o", "-", "--format", "jsonl", "--quiet",
                       home=home, cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    names = {json.loads(line)["name"] for line in exported.stdout.splitlines()}
    assert {"General Interest", "Newsletter"} <= names
