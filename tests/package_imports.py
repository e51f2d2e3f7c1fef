"""Which modules of the package each module imports, read from its source: every import counts, also
those inside functions (they run at call time all the same)."""
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
