"""The package's shape: no import cycles, load tools without the server, every import declared.

Imports are read from the source (every ``import``, also those inside functions, except under
``if TYPE_CHECKING:``), so a lazy import that closes a cycle is caught too.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tapad"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            for alias in node.names:  # ``from tapad.store import url``: a submodule
                if f"{base}.{alias.name}" in MODULES:
                    names.add(f"{base}.{alias.name}")
        for inner in ast.iter_child_nodes(node):
            visit(inner)

    visit(tree)
    return names


def internal_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for imported in imported_names(path):
            if imported in MODULES:
                targets.add(imported)
            elif imported.startswith("tapad."):  # ``from tapad.x import y`` where y is a name
                parent = imported.rpartition(".")[0]
                if parent in MODULES:
                    targets.add(parent)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles where a package's ``__init__`` re-exports a module that imports the package."""
    return cycles(
        {
            node: {t for t in targets if not node.startswith(t + ".")}
            for node, targets in graph.items()
        }
    )


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_in_tapad() -> None:
    assert package_cycles(internal_graph()) == []


# The package's layers, bottom first: a module imports from its own package and from lower
# layers only, never upward and never sideways into another package of its layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tapad", "tapad.buckets", "tapad.settings", "tapad.eventloop", "tapad.adapters"),
    ("tapad.store",),
    ("tapad.hour_rows", "tapad.usernames"),
    ("tapad.loadgen",),
    ("tapad.server", "tapad.commands"),
    ("tapad.cli",),
    ("tapad.__main__",),
)
# Within tapad.server, what starts and stops the server sits on top of what it wires.
SERVER_WIRING = ("tapad.server.run", "tapad.server.workers")


def layer_of(module: str) -> tuple[int, str]:
    """(layer, package) of a module: the longest package of LAYERS it is in."""
    found = [
        (i, package)
        for i, packages in enumerate(LAYERS)
        for package in packages
        if module == package or module.startswith(package + ".")
    ]
    assert found, f"{module} is in no layer of LAYERS"
    return max(found, key=lambda f: len(f[1]))


def test_nothing_imports_upward_or_sideways() -> None:
    wrong = []
    for module, targets in internal_graph().items():
        layer, package = layer_of(module)
        for target in targets:
            their_layer, their_package = layer_of(target)
            if their_package != package and their_layer >= layer:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_layer_rule_finds_an_upward_import() -> None:
    assert layer_of("tapad.store.redis.node") == (1, "tapad.store")
    assert layer_of("tapad.server.app")[0] > layer_of("tapad.store.base")[0]


def test_only_the_wiring_imports_the_wiring() -> None:
    """The hot path and the parts it is made of never import what starts the server."""
    for module, targets in internal_graph().items():
        if module.startswith("tapad.server.") and module not in SERVER_WIRING:
            assert not targets & set(SERVER_WIRING), module


def test_the_store_interface_depends_on_no_store() -> None:
    graph = internal_graph()
    assert graph["tapad.store.base"] == set()
    assert graph["tapad.store.options"] == {"tapad.settings"}
    for module in ("tapad.store.sqlite", "tapad.store.url", "tapad.store.base"):
        assert not any(t.startswith("tapad.store.redis") for t in graph[module]), module


def test_load_tools_import_nothing_of_the_server() -> None:
    graph = internal_graph()
    for start in [m for m in MODULES if m.startswith(("tapad.loadgen", "tapad.usernames"))]:
        server = sorted(m for m in reachable(graph, start) if m.startswith("tapad.server"))
        assert server == [], f"{start} reaches {server}"


def test_loadgen_runs_without_loading_the_server() -> None:
    """At run time too: the load tool's modules load no server, store or prometheus code."""
    code = (
        "import sys, tapad.cli, tapad.loadgen.command, tapad.loadgen.processes\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('tapad.server', 'redis', "
        "'prometheus_client', 'aiohttp')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        names.add(_normalize(match.group(0)))
    return names


def test_every_imported_package_is_declared() -> None:
    third_party = set()
    for path in MODULES.values():
        for name in imported_names(path):
            top = name.partition(".")[0]
            if top and top != "tapad" and top not in sys.stdlib_module_names:
                third_party.add(top)
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for top in sorted(third_party):
        distributions = {_normalize(d) for d in providers.get(top, [top])}
        if not distributions & declared:
            undeclared[top] = sorted(distributions)
    assert undeclared == {}, f"imported but not in pyproject dependencies: {undeclared}"


def test_the_module_map_in_docs_names_every_module_and_only_those() -> None:
    """docs/development.md's module map describes the layout as it is."""
    text = (ROOT / "docs" / "development.md").read_text()
    mapped = set(re.findall(r"^\| `(tapad/[\w/]+\.py)` \|", text, flags=re.M))
    modules = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - mapped) == [], "modules missing from docs/development.md's map"
    assert sorted(mapped - modules) == [], "docs/development.md maps modules that do not exist"
