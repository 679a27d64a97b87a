"""The README's "Common mistakes" table quotes messages the CLI really prints: every quoted
message is made of text found in the code's string literals."""

from __future__ import annotations

import ast
import errno
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
#: Where messages are assembled from parts: a place or prefix, the message, a note in
#: brackets, advice; and where a number is put together with its unit ("4 attempts in").
_SEAMS = re.compile(r"…|: |; | \(|\? — | attempts in ")
#: Pieces shorter than this ("HTTP 401", "pid") are not checked on their own.
_SHORTEST = 9
#: Text the messages take from the operating system (``strerror``).
_FROM_THE_OS = "\n".join(
    os.strerror(code).lower() for code in (errno.ECONNREFUSED, errno.EADDRINUSE)
)


def _section(readme: str) -> str:
    start = readme.index("## Common mistakes")
    return readme[start : readme.index("\n## ", start + 1)]


def _quoted_messages(section: str) -> list[str]:
    """The first code span of each table row's first cell."""
    found = []
    for line in section.splitlines():
        if line.startswith("| `"):
            found.append(line[3 : line.index("`", 3)])
    return found


def _literals() -> str:
    """Every string literal under ``bulkops/`` (an f-string's text between its fields), one
    per line: text split by a field never matches across it."""
    pieces: list[str] = [_FROM_THE_OS]
    for path in sorted((ROOT / "bulkops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                pieces.append(node.value)
    return "\n".join(pieces)


def _as_in_code(fragment: str) -> list[str]:
    """The fragment, and as the code spells it where the CLI shows a setting as its flag
    (``--create-lists`` is `` `create_lists` `` in the engine's messages)."""
    setting = re.sub(r"--([a-z][a-z-]*)", lambda m: f"`{m.group(1).replace('-', '_')}`", fragment)
    return [fragment, setting]


MESSAGES = _quoted_messages(_section((ROOT / "README.md").read_text(encoding="utf-8")))


def test_the_table_has_a_row_for_each_everyday_mistake() -> None:
    """Standard input, limits, wide and NUL headers, encodings, long fields, servers."""
    text = "\n".join(MESSAGES)
    for needle in (
        "'-' reads contacts from standard input",
        "--max-rows must be at least",
        "--max-bytes must be at least",
        "is over the API's limit",
        "the server takes smaller activities",
        "unknown columns",
        "holds the control character",
        "is not valid … text; name the file's encoding",
        "is longer than … characters",
        "the record is longer than",
        "connection refused",
        "must start with http:// or https://",
        "credentials are given",
        "the request budget",
        "is being run by another process",
    ):
        assert needle in text, needle


@pytest.mark.parametrize("message", MESSAGES)
def test_each_quoted_message_is_printed_by_the_code(message: str) -> None:
    """Each piece of the message between the varying parts is text of the code."""
    code = _literals()
    pieces = [p.strip(" '\"()?") for p in _SEAMS.split(message)]
    checked = [p for p in pieces if len(p) >= _SHORTEST]
    assert checked, f"nothing to check in {message!r}"
    for piece in checked:
        assert any(form in code for form in _as_in_code(piece)), (piece, message)


def test_the_check_itself_catches_a_message_the_code_does_not_print() -> None:
    """A made-up message fails the check."""
    code = _literals()
    assert not any(form in code for form in _as_in_code("the moon is made of cheese"))
