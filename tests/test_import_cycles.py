"""No module of the package imports itself through other modules: every import counts, also those inside
functions, since a cycle that runs only at call time still ties the modules to each other."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pnp_kernels"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def defining_module(name: str) -> str:
    """The module a dotted name lives in: ``pnp_kernels.config.RefinePlan`` -> ``pnp_kernels.config``."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imported_modules(path: Path) -> set[str]:
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "pnp_kernels":
                found |= {defining_module(f"{target}.{alias.name}") for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {defining_module(alias.name) for alias in node.names if alias.name.split(".")[0] == "pnp_kernels"}
    return found - {own}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None (depth-first search)."""
    state, path = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    graph = {name: imported_modules(path) for name, path in MODULES.items()}
    assert "pnp_kernels.config" in graph["pnp_kernels.published"]  # the resolver sees relative imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
