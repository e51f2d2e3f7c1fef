"""Public fused P&P update: inputs checked once, a backend chosen, outputs written into buffers.

Eager calls run the chosen backend directly; under ``torch.compile`` the work goes through the
``pnp_kernels::pnp_update`` custom op (``custom_op.py``), so that the graph sees one opaque,
shape-known op. Both paths run the same backend code on the same bundle; the direct path saves the
dispatcher's Python work for custom ops (schema defaults, autograd and in-place bookkeeping), which
costs more per call than everything else here (bench/test_op_host_time.py).
"""
from __future__ import annotations

import torch

from ..config import BACKENDS as BACKEND_NAMES
from .backends import choose_backend
from .custom_op import call_op
from .inputs import PnPUpdateInputs
from .outputs import PnPUpdateOutput, output_buffers
from .reference import count_nonfinite_noise


def pnp_update(
    z: torch.Tensor,
    v: torch.Tensor,
    sigma: float,
    sigma_next: float,
    *,
    out: PnPUpdateOutput | None = None,
    backend: str = "auto",
    **options,
) -> PnPUpdateOutput:
    """One fused Predict-and-Perturb iteration (docs/ALGORITHM.md); the math is ``ops/reference.py``.

    z: (B, C, F, H, W) float32 model input at ``sigma``; v: its velocity. ``options`` are the
    keywords of ``PnPUpdateInputs`` (``ops/inputs.py``), with their defaults: v_uncond=None,
    guidance_scale=1.0, prev_x0=None, prev_z_next=None, prev_certain=None, tau=0.25, p_norm=1,
    noise=None, active=None, num_pinned_frames=0, return_uncertainty=False, store_state=True,
    round_products_to=None.

    The result's ``nonfinite`` counts, per sample, the unpinned positions where the unmerged x0 or a
    ``noise`` tensor holds NaN/Inf (0 for a sample that ``active`` leaves out).

    out: buffers to write into (any field may be None to allocate it); they must not share memory
    with each other or with an input. backend: "auto" or a name of ``pnp_kernels.config.BACKENDS``.
    The result's ``backend`` field names the backend that ran.

    store_state=False skips writing the merged x0 and the certain mask (returned as None): nobody
    reads them after the last iteration of a step or at a plain step; z_next, the statistics and
    z_perturbed / uncertainty (when asked for) are still produced.

    round_products_to: None (default) keeps every product in float32. A dtype d (e.g.
    torch.bfloat16) reproduces the published code's arithmetic with bf16 velocities, which is also
    diffusers' FlowMatchEulerDiscreteScheduler.step: there a 0-dim float32 sigma multiplies a bf16
    velocity, and torch casts both the scale and the product to bf16. With r(x) = x rounded to d,
    s = float32(sigma), s' = float32(sigma_next) and v the (guided, float32) velocity:
    ``x0 = z - float32(r(r(s) * r(v)))`` and ``z_next = z + float32(r(r(s' - s) * r(v)))``, with
    s' - s taken in float32; everything else is unchanged. Only the torch backend implements it
    ("auto" picks it; an explicit other backend refuses).
    """
    inputs = PnPUpdateInputs(z, v, sigma, sigma_next, **options)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {backend!r}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    return update_checked(inputs, out, backend)


def update_checked(inputs: PnPUpdateInputs, out: PnPUpdateOutput | None, backend: str) -> PnPUpdateOutput:
    """``pnp_update`` on a bundle whose values are known good (``PnPUpdateInputs.trusted`` by a caller
    that checked them once per run, as the engine does) and a backend name from ``BACKENDS``."""
    chosen = choose_backend(backend, inputs)
    outputs = output_buffers(inputs, out, chosen.name)
    if torch.compiler.is_compiling():
        call_op(inputs, outputs, chosen.name)
    else:
        chosen.run(inputs, outputs)
    count_nonfinite_noise(inputs, outputs)
    return outputs
