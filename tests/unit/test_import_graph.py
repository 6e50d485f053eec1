"""llmgw's modules import each other without a circle.

The graph holds the module-level `llmgw.*` imports: those under `if TYPE_CHECKING:` never run,
and those inside functions run later, so neither can make an import fail half-way. A circle
through a function's import is still a tangle (two modules that each need the other), so a
second test counts those too, except a package's lazy import of its own submodule (`llmgw`'s
`__getattr__` importing `llmgw.gateway`).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmgw"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    """The llmgw modules one statement imports: `from a import b` names a.b when b is a module
    (a is then imported already, as the parent of a.b), else a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    found = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    if len(found) < len(node.names) and base in modules:
        found.add(base)
    return found


def deferred_imports(tree: ast.Module, package: str, modules: set[str]) -> set[str]:
    """The llmgw modules imported inside functions."""
    found: set[str] = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found |= imported(node, package, modules)
    return found


def top_level_imports(tree: ast.Module, package: str, modules: set[str]) -> set[str]:
    """The llmgw modules imported at module level, `if TYPE_CHECKING:` blocks left out."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(imported(node, package, modules))
            elif isinstance(node, ast.If):
                if not is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)
            # def/class bodies: functions run later; class bodies do run, but hold no imports here

    visit(tree.body)
    return found


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the llmgw modules it imports at module level (and, with `deferred`, inside
    its functions, but for a package's own submodules)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        targets = top_level_imports(tree, package, modules)
        if deferred:
            targets |= {target for target in deferred_imports(tree, package, modules)
                        if not (path.name == "__init__.py" and target.startswith(name + "."))}
        graph[name] = targets - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of two or more modules (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

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
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [cycle_within(graph, component) for component in components]


def cycle_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "llmgw.errors" in graph["llmgw"]  # `from llmgw import errors` names the module
    assert "llmgw.gateway" not in graph["llmgw"]  # under TYPE_CHECKING, and in __getattr__
    assert "llmgw.pipeline.lifecycle" in graph["llmgw.gateway"]
    assert "llmgw.server.chat_api" in import_graph(deferred=True)["llmgw.server.app"]


def test_finding_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_import_cycles_through_functions_either():
    cycles = find_cycles(import_graph(deferred=True))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
