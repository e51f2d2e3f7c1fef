"""The package's layers (docs/ARCHITECTURE.md), checked on every import of the package, also those inside
functions (they run at call time all the same):

- core imports only core;
- the integrations (diffusers, wan) import core, and wan imports diffusers;
- the embedded models (physics, toy) import core only: neither an integration nor each other;
- cli_common, what the command lines share, imports core and the integrations;
- the front-ends (cli, eval, comfyui) import any of those, but no front-end imports another.
"""
from pathlib import Path

import pytest

from tests.package_imports import PACKAGE, imported_modules

LAYERS = {"diffusers": "integration", "wan": "integration", "physics": "embedded model", "toy": "embedded model",
          "cli_common": "command-line common", "cli": "front-end", "eval": "front-end", "comfyui": "front-end"}
# Besides core, which every layer may import: the layers each layer may import.
MAY_IMPORT = {
    "core": set(),
    "integration": set(),
    "embedded model": set(),
    "command-line common": {"integration"},
    "front-end": {"integration", "embedded model", "command-line common"},
}
ALLOWED_EDGES = {("wan", "diffusers")}  # the Wan conveniences run on the generic diffusers integration
# ``python -m pnp_kernels`` is pnp-sample's entry point.
PART_ALIASES = {"__main__": "cli"}


def layer(part: str) -> str:
    return LAYERS.get(part, "core")


def top_part(module: str) -> str:
    """The first name under pnp_kernels of a module path ("engine" for "engine.state", "__init__" for the root)."""
    part = module.split(".")[0] if module else "__init__"
    return PART_ALIASES.get(part, part)


def imported_parts(path: Path) -> set[str]:
    """The first names under pnp_kernels of every module ``path`` imports."""
    return {top_part(module.partition(".")[2]) for module in imported_modules(path)}


def edges() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = top_part(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        found += [(own, other) for other in sorted(imported_parts(path)) if other != own]
    return sorted(set(found))


def forbidden(own: str, other: str) -> str | None:
    mine, theirs = layer(own), layer(other)
    if theirs == "core" or theirs in MAY_IMPORT[mine] or (own, other) in ALLOWED_EDGES:
        return None
    return f"{'core module' if mine == 'core' else mine} {own} imports the {theirs} {other}"


def test_every_import_keeps_to_the_layers():
    violations = [problem for own, other in edges() if (problem := forbidden(own, other))]
    assert not violations, "\n".join(violations)


def test_every_package_has_a_layer():
    """A package that is not core (one with a layer of its own) must be named in LAYERS, else it counts as
    core and every import from below goes unseen."""
    core = {"engine", "ops"}
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert packages - core == set(LAYERS), "name the new package's layer in LAYERS (docs/ARCHITECTURE.md)"


@pytest.mark.parametrize("own, other, expected", [
    ("engine", "diffusers", "core module engine imports the integration diffusers"),
    ("sampler", "cli", "core module sampler imports the front-end cli"),
    ("config", "cli_common", "core module config imports the command-line common cli_common"),
    ("diffusers", "wan", "integration diffusers imports the integration wan"),
    ("wan", "eval", "integration wan imports the front-end eval"),
    ("wan", "physics", "integration wan imports the embedded model physics"),
    ("physics", "toy", "embedded model physics imports the embedded model toy"),
    ("toy", "wan", "embedded model toy imports the integration wan"),
    ("physics", "cli_common", "embedded model physics imports the command-line common cli_common"),
    ("cli_common", "cli", "command-line common cli_common imports the front-end cli"),
    ("cli_common", "physics", "command-line common cli_common imports the embedded model physics"),
    ("eval", "cli", "front-end eval imports the front-end cli"),
    ("comfyui", "eval", "front-end comfyui imports the front-end eval"),
    ("wan", "diffusers", None), ("cli_common", "wan", None), ("cli", "physics", None), ("eval", "cli_common", None),
    ("comfyui", "engine", None), ("toy", "sampler", None), ("engine", "ops", None),
])
def test_the_rule_itself(own, other, expected):
    assert forbidden(own, other) == expected


def test_the_scan_sees_relative_absolute_root_and_lazy_imports():
    assert {"config", "ops", "validators"} <= imported_parts(PACKAGE / "engine" / "state.py")  # from ..x
    assert "engine" in imported_parts(PACKAGE / "sampler.py")  # from .engine
    assert "cli_common" in imported_parts(PACKAGE / "eval" / "cli.py")  # from ..cli_common.x, at the top
    assert "wan" in imported_parts(PACKAGE / "cli_common" / "pipeline.py")  # inside a function
    assert "physics" in imported_parts(PACKAGE / "eval" / "models.py")  # from pnp_kernels.physics...
    assert "__init__" in imported_parts(PACKAGE / "cli_common" / "options.py")  # from .. import __version__
