"""``pnp_kernels::pnp_update``: the fused update registered with torch.library (STYLE.md, three layers).

The op writes x0, z_next, certain, z_perturbed and uncertainty into buffers it is given (declared
in ``mutates_args``) and returns only the two small per-sample statistics. Writing in place, not
returning new tensors, is what lets the sampler double-buffer: a caller-owned buffer is filled by
the kernel itself, with no copy. ``torch.compile`` sees the op through its fake implementation and
functionalizes the writes; the eager op launches one kernel and allocates nothing latent-sized.

Philox noise crosses the op boundary as plain integers (the (k0, k1) words of each sample's seed,
step, iteration) so that no device tensor and no host read is needed to describe it.
"""
from __future__ import annotations

from typing import Optional

import torch

from .backends import BACKENDS
from .philox import PhiloxNoise
from .reference import PnPUpdateOutput

_MASK32 = 0xFFFFFFFF


def philox_key_words(noise: PhiloxNoise) -> list[int]:
    """The seeds of ``noise`` as [k0, k1, k0, k1, ...]: 32-bit words fit the op's int64 schema."""
    return [word for seed in noise.seeds for word in (seed & _MASK32, seed >> 32)]


@torch.library.custom_op(
    "pnp_kernels::pnp_update", mutates_args=("x0", "z_next", "certain", "z_perturbed", "uncertainty")
)
def pnp_update_op(
    z: torch.Tensor,
    v: torch.Tensor,
    v_uncond: Optional[torch.Tensor],
    prev_x0: Optional[torch.Tensor],
    prev_z_next: Optional[torch.Tensor],
    prev_certain: Optional[torch.Tensor],
    active: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    philox_keys: Optional[list[int]],
    philox_step: int,
    philox_iteration: int,
    sigma: float,
    sigma_next: float,
    guidance_scale: float,
    tau: float,
    p_norm: int,
    num_pinned_frames: int,
    round_products_to: Optional[torch.dtype],
    backend: str,
    x0: Optional[torch.Tensor],
    z_next: torch.Tensor,
    certain: Optional[torch.Tensor],
    z_perturbed: Optional[torch.Tensor],
    uncertainty: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run backend ``backend`` on validated inputs; returns (certain_fraction, nonfinite), both (B,)."""
    if philox_keys is not None:
        seeds = tuple(k0 | (k1 << 32) for k0, k1 in zip(philox_keys[0::2], philox_keys[1::2]))
        noise = PhiloxNoise(seeds, philox_step, philox_iteration)
    result = BACKENDS[backend].run(
        z, v, sigma, sigma_next,
        v_uncond=v_uncond, guidance_scale=guidance_scale,
        prev_x0=prev_x0, prev_z_next=prev_z_next, prev_certain=prev_certain,
        tau=tau, p_norm=p_norm, noise=noise, active=active, num_pinned_frames=num_pinned_frames,
        return_uncertainty=uncertainty is not None, store_state=x0 is not None,
        round_products_to=round_products_to,
        out=PnPUpdateOutput(x0, z_next, certain, None, None, z_perturbed, uncertainty),
    )
    return result.certain_fraction, result.nonfinite


@pnp_update_op.register_fake
def _pnp_update_fake(z, v, v_uncond, prev_x0, prev_z_next, prev_certain, active, noise, philox_keys,
                     philox_step, philox_iteration, sigma, sigma_next, guidance_scale, tau, p_norm,
                     num_pinned_frames, round_products_to, backend, x0, z_next, certain, z_perturbed, uncertainty):
    batch = z.shape[0]
    return (
        torch.empty((batch,), dtype=torch.float32, device=z.device),
        torch.empty((batch,), dtype=torch.int32, device=z.device),
    )
