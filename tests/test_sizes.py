"""Issue 11's size rule for every module of the package: no module over ~800 lines, no
function over ~80 lines unless a comment just above it says why (a hot loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bulkops"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions over ``limit`` lines without a ``#`` comment on the line above them."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > limit:
                above = lines[first - 2].strip() if first >= 2 else ""
                if not above.startswith("#"):
                    found.append(f"{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    """Each module is under the line limit, and so are its functions."""
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    assert not long_functions(source)


def test_the_rule_catches_a_long_function_and_accepts_a_commented_one() -> None:
    """A long function is found; the same with a comment above it is not."""
    body = "".join(f"    x{i} = {i}\n" for i in range(90))
    assert long_functions(f"def f():\n{body}") == ["f (91 lines)"]
    assert not long_functions(f"# a hot loop: one function keeps its locals fast\ndef f():\n{body}")
