"""Pure-PyTorch P&P update: the numerical specification every backend must match (SPEC §3).

One Predict-and-Perturb iteration at noise level ``sigma`` (all math in float32):

    v        = v_uncond + g * (v_cond - v_uncond)          (or v as given)
    x0       = z - sigma * v                                (clean prediction)
    z_next   = z + (sigma_next - sigma) * v                 (Euler proposal)
    U        = ||x0 - prev_x0||_p over channels / C         (only with a previous iteration)
    certain  = (U < tau) | prev_certain
    x0, z_next = where(certain, prev_x0, x0), where(certain, prev_z_next, z_next)
    fraction = mean(certain) over (F, H, W) per sample
    z_perturbed = (1 - sigma) * x0 + sigma * noise          (input of the next iteration)

Two per-sample refinements make batches behave like their samples run one at a time:
- ``active`` (B,) bool: a sample that is not active (it left the step early) keeps its previous
  x0 / z_next / certain unchanged.
- ``num_pinned_frames``: the first latent frames are a condition (TI2V image-to-video): they keep
  their input value in every output, are never certain and are not counted in the fraction.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .philox import PhiloxNoise, philox_normal


class PnPUpdateOutput(NamedTuple):
    """Outputs of one fused P&P update (shapes: latents (B,C,F,H,W), masks (B,F,H,W), stats (B,))."""

    x0: torch.Tensor  # float32 clean prediction after the masked merge
    z_next: torch.Tensor  # float32 Euler proposal after the masked merge
    certain: torch.Tensor  # bool certain mask (all False without a previous iteration)
    certain_fraction: torch.Tensor  # float32 per-sample fraction of certain (unpinned) positions
    nonfinite: torch.Tensor  # int32 per-sample count of NaN/Inf in the unmerged x0 (unpinned)
    z_perturbed: torch.Tensor | None  # float32 next model input, when noise was given
    uncertainty: torch.Tensor | None  # float32 U map, when asked for (0 where not computed)
    backend: str | None = None  # name of the backend that computed these (None in a buffer set for out=)


def pnp_update_reference(
    z: torch.Tensor,
    v: torch.Tensor,
    sigma: float,
    sigma_next: float,
    *,
    v_uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    prev_x0: torch.Tensor | None = None,
    prev_z_next: torch.Tensor | None = None,
    prev_certain: torch.Tensor | None = None,
    tau: float = 0.25,
    p_norm: int = 1,
    noise: torch.Tensor | PhiloxNoise | None = None,
    active: torch.Tensor | None = None,
    num_pinned_frames: int = 0,
    return_uncertainty: bool = False,
    store_state: bool = True,
    round_products_to: torch.dtype | None = None,
) -> PnPUpdateOutput:
    """One P&P iteration, written for clarity rather than speed. Inputs are assumed validated.

    store_state=False returns x0 and certain as None (z_perturbed still uses the merged x0).
    round_products_to: see ``pnp_update``.
    """
    batch, channels = z.shape[:2]
    z = z.float()
    v = v.float()
    if v_uncond is not None:
        v_uncond = v_uncond.float()
        v = v_uncond + guidance_scale * (v - v_uncond)

    if round_products_to is None:
        x0_step, z_next_step = sigma * v, (sigma_next - sigma) * v
    else:
        # As torch evaluates a 0-dim float32 tensor times a low-precision tensor (diffusers' Euler
        # step): the scale is cast to the low dtype too, and the product is rounded to it.
        sigma_t, sigma_next_t = (torch.tensor(s, dtype=torch.float32, device=z.device) for s in (sigma, sigma_next))
        low_v = v.to(round_products_to)
        x0_step = (sigma_t * low_v).float()
        z_next_step = ((sigma_next_t - sigma_t) * low_v).float()
    x0 = z - x0_step
    z_next = z + z_next_step
    free = torch.ones(z.shape[2:], dtype=torch.bool, device=z.device)  # (F, H, W): not pinned
    free[:num_pinned_frames] = False
    nonfinite = (~torch.isfinite(x0)).any(dim=1) & free
    nonfinite = nonfinite.flatten(1).sum(dim=1, dtype=torch.int32)

    uncertainty = torch.zeros((batch, *z.shape[2:]), dtype=torch.float32, device=z.device)
    certain = torch.zeros_like(uncertainty, dtype=torch.bool)
    if prev_x0 is not None:
        uncertainty = torch.linalg.vector_norm(x0 - prev_x0, ord=p_norm, dim=1) / channels
        certain = uncertainty < tau
        if prev_certain is not None:
            certain = certain | prev_certain
        certain = certain & free
        if active is not None:
            keep = ~active.view(batch, 1, 1, 1)
            certain = torch.where(keep, prev_certain if prev_certain is not None else False, certain)
            uncertainty = torch.where(keep, 0.0, uncertainty)
            nonfinite = nonfinite * active.to(torch.int32)  # its model output is discarded
            merge = certain | keep  # an inactive sample keeps every previous value
        else:
            merge = certain
        x0 = torch.where(merge.unsqueeze(1), prev_x0, x0)
        z_next = torch.where(merge.unsqueeze(1), prev_z_next, z_next)
    uncertainty = uncertainty * free

    pinned = ~free.view(1, 1, *free.shape)
    x0 = torch.where(pinned, z, x0)
    z_next = torch.where(pinned, z, z_next)
    num_free = (z.shape[2] - num_pinned_frames) * z.shape[3] * z.shape[4]  # from shapes: no host read
    certain_fraction = certain.flatten(1).sum(dim=1).float() / max(num_free, 1)

    z_perturbed = None
    if noise is not None:
        if isinstance(noise, PhiloxNoise):
            noise = philox_normal(noise, z.shape[1:], device=z.device)
        z_perturbed = torch.where(pinned, z, (1.0 - sigma) * x0 + sigma * noise.float())

    return PnPUpdateOutput(
        x0=x0 if store_state else None,
        z_next=z_next,
        certain=certain if store_state else None,
        certain_fraction=certain_fraction,
        nonfinite=nonfinite,
        z_perturbed=z_perturbed,
        uncertainty=uncertainty if return_uncertainty else None,
        backend="torch",
    )
