"""Pure-PyTorch P&P update: the numerical specification every backend must match (docs/ALGORITHM.md).

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

import torch

from .inputs import PnPUpdateInputs
from .outputs import PnPUpdateOutput
from .philox import philox_normal


def pnp_update_reference(z: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float, **options) -> PnPUpdateOutput:
    """``pnp_update``'s result computed by plain torch ops (same keywords, no ``out``/``backend``).

    Outside the custom op, so ``torch.compile`` traces into the math; the outputs are new tensors.
    """
    inputs = PnPUpdateInputs(z, v, sigma, sigma_next, **options)
    outputs = reference_update(inputs)
    count_nonfinite_noise(inputs, outputs)
    return outputs


def count_nonfinite(values: torch.Tensor, num_pinned_frames: int) -> torch.Tensor:
    """Per sample (int32), the unpinned (frame, row, column) positions where any channel is NaN/Inf."""
    bad = (~torch.isfinite(values[:, :, num_pinned_frames:])).any(dim=1)
    return bad.flatten(1).sum(dim=1, dtype=torch.int32)


def count_nonfinite_noise(inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
    """Add a noise tensor's NaN/Inf positions to ``outputs.nonfinite``. Every backend counts x0 only;
    a caller's noise reaches z_perturbed alone, so it is counted once here, after any backend."""
    noise = inputs.noise_tensor
    if noise is not None:
        in_noise = count_nonfinite(noise, inputs.num_pinned_frames)
        outputs.nonfinite.add_(in_noise if inputs.active is None else in_noise * inputs.active)


def _euler_products(inputs: PnPUpdateInputs, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma * v, (sigma_next - sigma) * v), rounded as ``round_products_to`` asks."""
    sigma, sigma_next, dtype = inputs.sigma, inputs.sigma_next, inputs.round_products_to
    if dtype is None:
        return sigma * v, (sigma_next - sigma) * v
    # As torch evaluates a 0-dim float32 tensor times a low-precision tensor (diffusers' Euler step):
    # the scale is cast to the low dtype too, and the product is rounded to it.
    sigma_t, sigma_next_t = (torch.tensor(s, dtype=torch.float32, device=v.device) for s in (sigma, sigma_next))
    low_v = v.to(dtype)
    return (sigma_t * low_v).float(), ((sigma_next_t - sigma_t) * low_v).float()


def reference_update(inputs: PnPUpdateInputs) -> PnPUpdateOutput:
    """One P&P iteration on validated inputs, written for clarity rather than speed."""
    batch, channels = inputs.batch, inputs.channels
    z = inputs.z
    v = inputs.v.float()
    if inputs.v_uncond is not None:
        v_uncond = inputs.v_uncond.float()
        v = v_uncond + inputs.guidance_scale * (v - v_uncond)

    x0_step, z_next_step = _euler_products(inputs, v)
    x0 = z - x0_step
    z_next = z + z_next_step
    free = torch.ones(z.shape[2:], dtype=torch.bool, device=z.device)  # (F, H, W): not pinned
    free[: inputs.num_pinned_frames] = False
    nonfinite = count_nonfinite(x0, inputs.num_pinned_frames)

    uncertainty = torch.zeros(inputs.mask_shape, dtype=torch.float32, device=z.device)
    certain = torch.zeros_like(uncertainty, dtype=torch.bool)
    prev_x0, prev_certain, active = inputs.prev_x0, inputs.prev_certain, inputs.active
    if prev_x0 is not None:
        uncertainty = torch.linalg.vector_norm(x0 - prev_x0, ord=inputs.p_norm, dim=1) / channels
        certain = uncertainty < inputs.tau
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
        z_next = torch.where(merge.unsqueeze(1), inputs.prev_z_next, z_next)
    uncertainty = uncertainty * free

    pinned = ~free.view(1, 1, *free.shape)
    x0 = torch.where(pinned, z, x0)
    z_next = torch.where(pinned, z, z_next)
    certain_fraction = certain.flatten(1).sum(dim=1).float() / max(inputs.num_free_positions, 1)

    z_perturbed = None
    if inputs.noise is not None:
        noise = inputs.noise_tensor
        if noise is None:
            noise = philox_normal(inputs.philox, z.shape[1:], device=z.device)
        z_perturbed = torch.where(pinned, z, (1.0 - inputs.sigma) * x0 + inputs.sigma * noise.float())

    return PnPUpdateOutput(
        x0=x0 if inputs.store_state else None,
        z_next=z_next,
        certain=certain if inputs.store_state else None,
        certain_fraction=certain_fraction,
        nonfinite=nonfinite,
        z_perturbed=z_perturbed,
        uncertainty=uncertainty if inputs.return_uncertainty else None,
        backend="torch",
    )
