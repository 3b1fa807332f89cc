"""The layers of README's package table, checked over every module of every package.

    common  <-  rules  <-  connectors  <-  stream  <-  serving  <-  segments

A module may import its own package and any package to its left, never one to its right;
no two modules import each other, directly or round a longer loop; and an import of ours
inside a function (the usual way to hide a cycle) is refused unless allow-listed below
with its reason. The checker is tested on synthetic modules too, so a broken checker
cannot pass quietly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("common", "rules", "connectors", "stream", "serving", "segments")
RANK = {name: rank for rank, name in enumerate(LAYERS)}

#: Modules allowed to import our own modules inside functions, and why.
LAZY_ALLOWED = {
    # `segments --help` and every subcommand's argument errors must answer without
    # importing aiokafka, stripe, aiohttp and redis: each command imports what it runs.
    "segments.cli": "start-up cost of the command line",
    "segments.commands": "start-up cost of the command line",
}
#: Third-party roots the pure `rules` package must never import.
RULES_FORBIDDEN = {"aiokafka", "kafka", "stripe", "redis", "aiohttp", "faust", "orjson"}
MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, importer: str, is_package: bool = False) -> Iterator[Import]:
    """Every import statement of `source`, absolute names, with whether it sits in a
    function body."""
    tree = ast.parse(source)
    package = importer if is_package else importer.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(importer, alias.name, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    # `from pkg import module` imports the module when there is one.
                    yield Import(importer, f"{base}.{alias.name}", child.lineno, in_function)
            yield from visit(child, nested)

    yield from visit(tree, False)


def ours(name: str, modules: set[str]) -> str | None:
    """The module of ours that `name` refers to (longest known prefix), or None."""
    parts = name.split(".")
    if parts[0] not in RANK:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return parts[0]


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Everything wrong with a set of modules {name: (source, is_package)}."""
    modules = set(sources)
    found: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (source, is_package) in sources.items():
        for imp in imports_of(source, name, is_package):
            target = ours(imp.imported, modules)
            if target is None:
                if name.split(".")[0] == "rules" and imp.imported.split(".")[0] in RULES_FORBIDDEN:
                    found.append(f"{name}:{imp.line} rules imports {imp.imported}")
                continue
            layer, their = name.split(".")[0], target.split(".")[0]
            if RANK[their] > RANK[layer]:
                found.append(f"{name}:{imp.line} imports {target} (up from {layer} to {their})")
            if imp.in_function and not any(
                name == allowed or name.startswith(allowed + ".") for allowed in LAZY_ALLOWED
            ):
                found.append(f"{name}:{imp.line} imports {target} inside a function")
            if target != name and not target.startswith(name + "."):
                graph[name].add(target)
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return out


def project_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            sources[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return sources


def test_every_package_respects_the_layers() -> None:
    assert violations(project_sources()) == []


def test_every_package_says_what_it_owns() -> None:
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / layer / "__init__.py").read_text()))
        assert doc is not None, f"{layer}/__init__.py needs a docstring of what it owns"
        assert len(doc) > 80, f"{layer}/__init__.py: say what the package owns and imports"


@pytest.mark.parametrize("layer", LAYERS)
def test_modules_stay_small(layer: str) -> None:
    too_long = [str(p.relative_to(ROOT)) for p in (ROOT / layer).rglob("*.py")
                if len(p.read_text().splitlines()) > MAX_LINES]
    assert too_long == []


# The checker itself: each rule fires on a synthetic module that breaks it.

def test_checker_refuses_an_upward_import() -> None:
    found = violations({
        "stream.pipeline": ("from serving.api import build\n", False),
        "serving.api": ("", False),
    })
    assert found == ["stream.pipeline:1 imports serving.api (up from stream to serving)"]


def test_checker_refuses_the_leaf_importing_anything_of_ours() -> None:
    found = violations({"common.settings": ("import rules.model\n", False),
                        "rules.model": ("", False)})
    assert found == ["common.settings:1 imports rules.model (up from common to rules)"]


def test_checker_refuses_a_cycle_and_the_function_import_that_hides_it() -> None:
    found = violations({
        "serving.api": ("def build():\n    from serving import web\n", False),
        "serving.web": ("from serving.api import FEED\n", False),
        "serving": ("", True),
    })
    assert "serving.api:2 imports serving.web inside a function" in found
    assert "import cycle: serving.api -> serving.web" in found


def test_checker_allows_downward_imports_and_listed_lazy_ones() -> None:
    assert violations({
        "segments.commands.worker": ("def run():\n    from stream.app import create\n", False),
        "stream.app": ("from rules import parse\nfrom common.settings import S\n", False),
        "rules": ("from common.keys import pack\n", True),
        "common.settings": ("import os\n", False),
        "common.keys": ("", False),
    }) == []


def test_checker_keeps_rules_free_of_brokers() -> None:
    assert violations({"rules.evaluate": ("import aiokafka\n", False)}) == [
        "rules.evaluate:1 rules imports aiokafka"]
