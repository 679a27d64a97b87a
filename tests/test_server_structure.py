"""The server's structure, checked on the source with ast: a kit at the bottom, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).parent.parent / "bulkops" / "server"

#: The modules that serve resources: they build on the kit and never on each other.
RESOURCES = frozenset({"activities", "campaigns", "contacts", "events", "lists", "settings"})

#: The SQLite side: the only modules that may hold SQL (behind storage.Storage, plus the
#: credential store and the seeders, which write a SQLite file directly by design).
SQL_MODULES = frozenset(
    {
        "activity_queries",
        "apply",
        "auth",
        "campaign_queries",
        "event_queries",
        "exports",
        "pg_apply",
        "pg_claims",
        "pg_dialect",
        "pg_exports",
        "pg_schema",
        "pg_storage",
        "pg_throttle",
        "queries",
        "seed",
        "seed_cli",
        "seed_events",
        "setting_queries",
        "sqlite_storage",
        "store",
        "throttle_queries",
    }
)


def server_imports(path: Path, package: str = "bulkops.server") -> set[str]:
    """The sibling modules ``path`` imports (``from bulkops.server.x import …`` and the like)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith(package + "."):
                names.add(node.module[len(package) + 1 :].split(".")[0])
            elif node.module == package:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package + "."):
                    names.add(alias.name[len(package) + 1 :].split(".")[0])
    return names


def import_graph(directory: Path, package: str = "bulkops.server") -> dict[str, set[str]]:
    """Module name -> the sibling modules it imports."""
    modules = {path.stem: path for path in directory.glob("*.py")}
    return {
        name: server_imports(path, package) & set(modules) - {name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, …, a]``), or None when the graph has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            found = visit(target)
            if found is not None:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found is not None:
            return found
    return None


def test_no_import_cycle_among_server_modules() -> None:
    """No bulkops.server module imports, directly or not, one that imports it."""
    cycle = find_cycle(import_graph(SERVER))
    assert cycle is None, " -> ".join(cycle or ())


def test_resource_modules_build_on_the_kit_not_on_app_or_each_other() -> None:
    """Resource modules never import app (which assembles them) nor another resource module."""
    graph = import_graph(SERVER)
    assert set(graph) >= RESOURCES
    for name in sorted(RESOURCES):
        assert "app" not in graph[name], f"{name} imports app"
        assert not graph[name] & RESOURCES, f"{name} imports {sorted(graph[name] & RESOURCES)}"


def test_only_the_entry_points_import_app() -> None:
    """app is the top: only serve (the entry point) imports it."""
    importers = {name for name, targets in import_graph(SERVER).items() if "app" in targets}
    assert importers <= {"serve"}, sorted(importers)


def test_the_kit_imports_no_resource_module() -> None:
    """http and feeds are at the bottom: no resource module, no app, no worker below them."""
    graph = import_graph(SERVER)
    for kit in ("http", "feeds", "errors", "asgi"):
        assert not graph[kit] & (RESOURCES | {"app", "resources", "worker"}), kit


def holds_sql(path: Path) -> bool:
    """Whether a module imports sqlite3 or calls ``execute``/``executemany``/``executescript``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name == "sqlite3" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            return True
        if isinstance(node, ast.Attribute) and node.attr in (
            "execute",
            "executemany",
            "executescript",
        ):
            return True
    return False


def test_no_sql_outside_the_store_modules() -> None:
    """Resources, the kit, the worker and the app reach the data only through Storage."""
    holders = {path.stem for path in SERVER.glob("*.py") if holds_sql(path)}
    assert holders <= SQL_MODULES, sorted(holders - SQL_MODULES)
    assert "worker" not in holders
    assert not holders & RESOURCES


def test_no_server_module_is_over_800_lines() -> None:
    """Modules stay small enough to read (house style: ~800 lines at most)."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in SERVER.glob("*.py")}
    assert max(sizes.values()) <= 800, sorted(sizes.items(), key=lambda item: -item[1])[:3]


def test_the_rule_itself_catches_a_violation(tmp_path: Path) -> None:
    """The checker is not vacuous: a cycle through three modules and an app import are found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "app.py").write_text("from pkg.lists import routes\n")
    (package / "lists.py").write_text("from pkg.http import kit\n")
    (package / "http.py").write_text("import pkg.app\n")
    graph = import_graph(package, "pkg")
    assert graph == {"app": {"lists"}, "lists": {"http"}, "http": {"app"}}
    assert find_cycle(graph) == ["app", "lists", "http", "app"]
    (package / "http.py").write_text("from pkg import errors\n")
    assert find_cycle(import_graph(package, "pkg")) is None
    (package / "lists.py").write_text("def page(db):\n    return db.execute('SELECT 1')\n")
    assert holds_sql(package / "lists.py")
    assert not holds_sql(package / "http.py")
