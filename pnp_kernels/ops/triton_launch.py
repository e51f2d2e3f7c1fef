"""Launcher of the Triton P&P update: layouts, output buffers, grid and block sizes.

Inputs are assumed validated by ``pnp_update``. Per call it allocates only the outputs the caller
did not provide and one (2, B) int32 counter (a few bytes, zeroed by the same call, so concurrent
streams never share it). Non-contiguous inputs are copied to contiguous ones; a non-contiguous
output buffer is computed in a contiguous one and copied back: correct, at the price of a pass.
"""
from __future__ import annotations

import math

import torch
import triton

from .philox import PhiloxNoise
from .reference import PnPUpdateOutput
from .triton_kernel import NOISE_NONE, NOISE_PHILOX, NOISE_TENSOR, _philox_normal_kernel, _pnp_update_kernel

# Elements per program (channels x positions) and warps: 8 elements of each latent per thread.
# Chosen from ptxas register counts for sm_90 (with in-kernel philox normals in float64 about 120
# registers, 64-75 without, no spills), not yet tuned by measurement on a device.
TILE_ELEMENTS = 2048
NUM_WARPS = 8


def block_spatial(channels: int) -> int:
    """Spatial positions per program for ``channels`` channels (all channels stay in one program)."""
    return max(16, min(512, TILE_ELEMENTS // triton.next_power_of_2(channels)))


def _input(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None or t.is_contiguous():
        return t
    return t.contiguous()


def _output(given: torch.Tensor | None, shape, dtype, device) -> torch.Tensor:
    # Shapes and dtypes of given buffers were checked by pnp_update.
    return given if given is not None else torch.empty(shape, dtype=dtype, device=device)


def _as_bytes(mask: torch.Tensor | None) -> torch.Tensor | None:
    # The kernel reads and writes bool masks as bytes.
    return None if mask is None else mask.view(torch.uint8)


def run_triton(
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
    out: PnPUpdateOutput | None = None,
) -> PnPUpdateOutput:
    """``pnp_update_reference`` in one Triton kernel launch, written into ``out`` where given."""
    batch, channels, frames, height, width = z.shape
    spatial = frames * height * width
    device = z.device
    out = out if out is not None else PnPUpdateOutput(None, None, None, None, None, None, None)
    mask_shape = (batch, frames, height, width)

    targets = {
        "x0": _output(out.x0, z.shape, torch.float32, device) if store_state else None,
        "z_next": _output(out.z_next, z.shape, torch.float32, device),
        "certain": _output(out.certain, mask_shape, torch.bool, device) if store_state else None,
        "z_perturbed": None if noise is None else _output(out.z_perturbed, z.shape, torch.float32, device),
        "uncertainty": _output(out.uncertainty, mask_shape, torch.float32, device) if return_uncertainty else None,
    }
    # The kernel writes contiguous memory; a strided caller buffer gets its values copied after.
    kernel_outputs = {name: _input(t) for name, t in targets.items()}

    if isinstance(noise, PhiloxNoise):
        noise_mode, noise_tensor = NOISE_PHILOX, None
        # key_table is cached per (seeds, device): no host-to-device copy per call.
        philox_key, philox_step, philox_iteration = noise.key_table(device), noise.step, noise.iteration
    else:
        noise_mode = NOISE_NONE if noise is None else NOISE_TENSOR
        noise_tensor, philox_key, philox_step, philox_iteration = _input(noise), None, 0, 0
    counts = torch.zeros((2, batch), dtype=torch.int32, device=device)

    z = _input(z)

    def pointer(t: torch.Tensor | None) -> torch.Tensor:
        return z if t is None else t  # any valid pointer where the constexpr flags switch a use off

    block = block_spatial(channels)
    grid = (triton.cdiv(spatial, block), batch)
    if batch * spatial > 0:  # an empty grid is no launch; the counts stay 0, as in the reference
        _pnp_update_kernel[grid](
            z, _input(v), pointer(_input(v_uncond)), pointer(_input(prev_x0)), pointer(_input(prev_z_next)),
            pointer(_as_bytes(_input(prev_certain))), pointer(_as_bytes(active)),
            pointer(noise_tensor), pointer(philox_key),
            pointer(kernel_outputs["x0"]), kernel_outputs["z_next"], pointer(_as_bytes(kernel_outputs["certain"])),
            pointer(kernel_outputs["z_perturbed"]), pointer(kernel_outputs["uncertainty"]),
            counts,
            batch, spatial, num_pinned_frames * height * width,
            # Scalars are formed in float64 on the host; Triton passes them as float32, as torch
            # rounds Python scalars for float32 tensors in the reference.
            float(sigma), float(sigma_next) - float(sigma), 1.0 - float(sigma), float(guidance_scale), float(tau),
            philox_step, philox_iteration,
            CHANNELS=channels, CHANNELS_PADDED=triton.next_power_of_2(channels), BLOCK_SPATIAL=block,
            HAS_GUIDANCE=v_uncond is not None, HAS_PREV=prev_x0 is not None,
            HAS_PREV_CERTAIN=prev_certain is not None, HAS_ACTIVE=active is not None,
            NOISE_MODE=noise_mode.value, P_NORM=int(p_norm), WRITE_UNCERTAINTY=return_uncertainty,
            STORE_STATE=store_state, num_warps=NUM_WARPS,
            # Separate multiply and add, as the reference rounds them: bit-level agreement costs a
            # memory-bound kernel nothing, and keeps Triton 3.9's fusion default out of the results.
            enable_fp_fusion=False,
        )
    for name, target in targets.items():
        if target is not None and kernel_outputs[name] is not target:
            target.copy_(kernel_outputs[name])

    num_free = max((frames - num_pinned_frames) * height * width, 1)
    fraction = torch.div(counts[0], num_free, out=_output(out.certain_fraction, (batch,), torch.float32, device))
    nonfinite = counts[1] if out.nonfinite is None else out.nonfinite.copy_(counts[1])
    return PnPUpdateOutput(
        x0=targets["x0"],
        z_next=targets["z_next"],
        certain=targets["certain"],
        certain_fraction=fraction,
        nonfinite=nonfinite,
        z_perturbed=targets["z_perturbed"],
        uncertainty=targets["uncertainty"],
        backend="triton",
    )


def triton_philox(noise: PhiloxNoise, sample_shape, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton side of the philox spec, for checking it against ``philox.py`` bit for bit.

    Returns the words x0 and x1 (int64 holding uint32) and the float32 normals, each of shape
    (B, *sample_shape).
    """
    numel = math.prod(sample_shape)
    if numel > 2**32:
        raise ValueError(f"a sample of shape {tuple(sample_shape)} has more than 2**32 elements")
    shape = (len(noise.seeds), *sample_shape)
    x0 = torch.empty(shape, dtype=torch.int64, device=device)
    x1 = torch.empty_like(x0)
    normal = torch.empty(shape, dtype=torch.float32, device=device)
    block = 1024
    _philox_normal_kernel[(triton.cdiv(numel, block), len(noise.seeds))](
        noise.key_table(device), x0, x1, normal, numel,
        noise.step, noise.iteration, BLOCK=block,
    )
    return x0, x1, normal
