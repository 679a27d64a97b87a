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


# -- import cycles ------------------------------------------------------------------------------


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere (top level, functions, and
    ``TYPE_CHECKING`` blocks alike); ``from pkg import mod`` counts as importing ``pkg.mod``."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    if child in modules:
                        edges.add(child)
                    elif node.module in modules:
                        edges.add(node.module)
        graph[module_name(path, root)] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan), or a module
    importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_bulkops_modules() -> None:
    """No module of bulkops imports itself through others."""
    cycles = [sorted(cycle) for cycle in import_cycles(import_graph())]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", ["engine", "cli"])
def test_engine_and_cli_import_httpx_only_in_the_client(layer: str) -> None:
    """The client is the one seam to HTTP: nothing else in the engine or CLI imports httpx."""
    for path in sources(layer):
        if path == PACKAGE / "engine" / "client.py":
            continue
        bad = sorted(m for m in imported_modules(path) if violates(m, {"httpx", "httpcore"}))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
    main = PACKAGE / "__main__.py"
    assert not violates_any(imported_modules(main), {"httpx", "httpcore"})


def violates_any(modules: set[str], forbidden: set[str]) -> bool:
    return any(violates(module, forbidden) for module in modules)


def test_the_cycle_and_httpx_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checkers are not vacuous: a planted cycle and a planted httpx import are found."""
    package = tmp_path / "bulkops"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("from bulkops.engine import client\n")
    (package / "engine" / "__init__.py").write_text("")
    (package / "engine" / "client.py").write_text("import httpx\nfrom bulkops import errors\n")
    (package / "engine" / "imports.py").write_text("import httpx\nfrom bulkops.engine import x\n")
    (package / "engine" / "x.py").write_text("def f():\n    from bulkops.engine.imports import g\n")
    (package / "errors.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bulkops\n"
    )
    cycles = import_cycles(import_graph(package))
    assert sorted(sorted(c) for c in cycles) == [
        ["bulkops", "bulkops.engine.client", "bulkops.errors"],
        ["bulkops.engine.imports", "bulkops.engine.x"],
    ]
    assert violates_any(imported_modules(package / "engine" / "imports.py"), {"httpx"})
