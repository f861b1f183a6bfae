"""Dependencies inside tritonnet point down: no module imports one that imports it back.

The graph is read from the source with `ast`, not by importing: every `import` and
`from ... import` statement, at the top of a module or inside a function, and
every `importlib.import_module("...")` with a literal name (how the dispatch point
loads a backend lazily). A name imported from a package that is one of its
submodules (`from tritonnet import checks`) is an edge to that submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Where each package's modules live: kernels/ installs as tritonnet.kernels.
PACKAGES = {"tritonnet": ROOT / "tritonnet", "tritonnet.kernels": ROOT / "kernels"}


def module_files() -> dict[str, Path]:
    """Every module of tritonnet by dotted name, packages by their __init__.py."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imported_modules(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` (module `module`) imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the tritonnet modules it imports (a `from pkg import name` whose name
    is no submodule counts as importing pkg itself)."""
    files = module_files()
    return {module: imported_modules(path, module, set(files)) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return visiting[visiting.index(module) :] + [module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    # Edges the test must see for its verdict to mean anything: a top-level
    # import, a `from package import submodule` and a lazy import_module call.
    assert "tritonnet.environment" in graph["tritonnet.backend"]
    assert "tritonnet.checks" in graph["tritonnet.triton_backend.linear"]
    assert "tritonnet.triton_backend" in graph["tritonnet.backend"]


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_tritonnet():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
