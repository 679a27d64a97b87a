"""The shape of the bulkops.wire.atom package, checked on the source with ast."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bulkops" / "wire" / "atom"
PREFIX = "bulkops.wire.atom."


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}


def sibling_imports(tree: ast.Module) -> set[str]:
    """The sibling modules a module imports (``from bulkops.wire.atom.x import …``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PREFIX):
                found.add(node.module.removeprefix(PREFIX))
            elif node.module == "bulkops.wire.atom" or node.level:
                found.add("__init__")
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix(PREFIX)
                for alias in node.names
                if alias.name.startswith(PREFIX)
            )
    return found


def import_order(graph: dict[str, set[str]]) -> list[str]:
    """The modules, each after those it imports; CycleError when there is no such order."""
    return list(TopologicalSorter(graph).static_order())


def test_the_modules_import_each_other_without_a_cycle() -> None:
    """syntax at the bottom, feeds at the top, every import pointing down."""
    graph = {name: sibling_imports(tree) for name, tree in modules().items()}
    order = import_order(graph)
    assert order.index("syntax") < order.index("reading") < order.index("feeds")
    assert graph["syntax"] == set()
    assert "__init__" not in set().union(*graph.values())


def test_the_cycle_check_itself_finds_a_cycle() -> None:
    """The checker is not vacuous: a module pair importing each other is refused."""
    with pytest.raises(CycleError):
        import_order({"lists": {"contacts"}, "contacts": {"lists"}})


def test_the_package_re_exports_nothing() -> None:
    """__init__ is a docstring only: each name is imported from the module that holds it."""
    init = modules()["__init__"]
    assert len(init.body) == 1
    assert isinstance(init.body[0], ast.Expr)
    assert isinstance(init.body[0].value, ast.Constant)


def test_each_public_name_has_one_home_and_modules_stay_small() -> None:
    """No name in two modules' __all__; no module over 800 lines."""
    homes: dict[str, str] = {}
    for name, tree in modules().items():
        assert len((PACKAGE / f"{name}.py").read_text().splitlines()) <= 800, name
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                for public in ast.literal_eval(node.value):
                    assert public not in homes, (public, homes.get(public), name)
                    homes[public] = name
    assert homes["parse_xml"] == "syntax"
    assert homes["record_from_entry"] == "feeds"
