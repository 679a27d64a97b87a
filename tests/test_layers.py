"""The dependency rule of design.md §1, checked on the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bulkops"

# Pure layers are fed bytes and a `now`: no IO, no clock, no concurrency runtime.
PURE_FORBIDDEN = {
    "trio",
    "httpx",
    "anyio",
    "asyncio",
    "socket",
    "time",
    "sqlite3",
    "subprocess",
    "threading",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "starlette",
    "hypercorn",
    "bulkops.engine",
    "bulkops.server",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def calls_open(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        for node in ast.walk(tree)
    )


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in forbidden)


def sources(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", ["wire", "stream"])
def test_pure_layers_import_no_io_and_no_clock(layer: str) -> None:
    """wire and stream import neither trio, httpx, sockets, the clock nor files."""
    for path in sources(layer):
        bad = sorted(m for m in imported_modules(path) if violates(m, PURE_FORBIDDEN))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
        assert not calls_open(path), f"{path.relative_to(PACKAGE)} opens files"


@pytest.mark.parametrize(("layer", "other"), [("engine", "server"), ("server", "engine")])
def test_engine_and_server_never_import_each_other(layer: str, other: str) -> None:
    """engine and server meet only in tests and in the CLI."""
    for path in sources(layer):
        bad = sorted(m for m in imported_modules(path) if violates(m, {f"bulkops.{other}"}))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_rule_itself_catches_a_violation(tmp_path: Path) -> None:
    """The checker is not vacuous: a forbidden import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom bulkops.server import app\nopen('x')\n")
    assert violates("trio", PURE_FORBIDDEN)
    assert {"trio", "bulkops.server"} <= imported_modules(bad)
    assert calls_open(bad)
