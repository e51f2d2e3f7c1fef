"""pnp_kernels: fast Predict-and-Perturb self-refining sampling for flow-matching video models.

The public names load their modules on first use, so that ``import pnp_kernels`` (and the command
line's ``--help``) does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "DEFAULT_PLAN": "published",
    "WAN22_T2V_PLAN": "published",
    "PnPConfig": "config",
    "RefinePlan": "config",
    "PhiloxNoise": "ops",
    "PnPUpdateOutput": "ops",
    "pnp_update": "ops",
    "Guided": "sampler",
    "IterationEvent": "sampler",
    "NonFiniteError": "sampler",
    "PnPResult": "sampler",
    "PnPStats": "sampler",
    "pnp_sample": "sampler",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
