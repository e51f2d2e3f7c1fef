"""No module of the package imports itself through other modules: every import counts, also those inside
functions, since a cycle that runs only at call time still ties the modules to each other."""
from tests.package_imports import MODULES, imported_modules


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
