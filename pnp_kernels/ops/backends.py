"""Backends of the fused update as data: what each supports, and why it cannot run (STYLE.md).

"auto" walks ``AUTO_PRIORITY`` and takes the first backend with no reasons against the inputs; an
explicitly requested backend that cannot run raises with its reasons.
"""
from __future__ import annotations

import logging

import torch

from .reference import PnPUpdateOutput, pnp_update_reference

logger = logging.getLogger("pnp_kernels")


def write_outputs(result: PnPUpdateOutput, out: PnPUpdateOutput | None) -> PnPUpdateOutput:
    """Copy a freshly computed result into caller-owned tensors where given."""
    if out is None:
        return result
    fields = {}
    for name, value in result._asdict().items():
        target = getattr(out, name)
        if target is None or value is None:
            fields[name] = value
        else:
            if target.shape != value.shape or target.dtype != value.dtype:
                raise ValueError(
                    f"out.{name} has shape {tuple(target.shape)} / {target.dtype}, "
                    f"expected {tuple(value.shape)} / {value.dtype}"
                )
            fields[name] = target.copy_(value)
    return PnPUpdateOutput(**fields)


class TorchBackend:
    """The pure-PyTorch reference: runs anywhere, it is the specification."""

    name = "torch"

    def not_supported_reasons(self, z, v, v_uncond) -> list[str]:
        return []

    def run(self, z, v, sigma, sigma_next, *, out=None, **kwargs) -> PnPUpdateOutput:
        return write_outputs(pnp_update_reference(z, v, sigma, sigma_next, **kwargs), out)


BACKENDS = {"torch": TorchBackend()}
AUTO_PRIORITY = ("torch",)
_reported: set[tuple[str, str]] = set()


def select_backend(requested: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None):
    """The backend object for ``requested`` ("auto" or a name), or an error listing the reasons."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {requested!r}")
        backend = BACKENDS[requested]
        reasons = backend.not_supported_reasons(z, v, v_uncond)
        if reasons:
            raise RuntimeError(f"backend {requested!r} cannot run on these inputs: {'; '.join(reasons)}")
        return backend
    refused = {}
    for name in AUTO_PRIORITY:
        reasons = BACKENDS[name].not_supported_reasons(z, v, v_uncond)
        if not reasons:
            key = (name, str(z.device.type))
            if key not in _reported:  # say once per device type which backend auto chose
                _reported.add(key)
                logger.info("pnp_update: backend 'auto' chose %r for %s tensors", name, z.device.type)
            return BACKENDS[name]
        refused[name] = reasons
    details = "; ".join(f"{n}: {', '.join(r)}" for n, r in refused.items())
    raise RuntimeError(f"no pnp_update backend can run on these inputs ({details})")
