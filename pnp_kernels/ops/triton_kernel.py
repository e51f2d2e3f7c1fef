"""Triton kernels of the fused P&P update; the math is ``ops/reference.py``, the launcher ``triton_launch.py``.

One program owns a block of spatial positions (flat index s into F*H*W) of one sample and all C
channels of them, so the channel reduction of the uncertainty stays in registers and every latent
element is read once and written once.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Values of the NOISE_MODE constexpr: where the noise of z_perturbed comes from.
NOISE_NONE = tl.constexpr(0)  # no next iteration: z_perturbed is not written
NOISE_TENSOR = tl.constexpr(1)
NOISE_PHILOX = tl.constexpr(2)


@triton.jit
def _philox_bits(key_ptr, sample, element, philox_step, philox_iteration):
    """(x0, x1) of Philox4x32-10 with counter (element, 0, step, iteration) and the sample's key (philox.py)."""
    k0 = tl.load(key_ptr + 2 * sample).to(tl.uint64)
    k1 = tl.load(key_ptr + 2 * sample + 1).to(tl.uint64)
    # tl.philox takes the 64-bit key as one integer: low word k0, high word k1.
    seed = (k1 << 32) | k0
    # Counter words are uint32; element < 2**32 is checked by the launcher.
    counter0 = element.to(tl.uint32)
    zero = tl.zeros_like(counter0)
    step = zero + philox_step.to(tl.uint32)
    iteration = zero + philox_iteration.to(tl.uint32)
    x0, x1, _, _ = tl.philox(seed, counter0, zero, step, iteration, 10)
    return x0, x1


@triton.jit
def _bits_to_normal(x0, x1):
    """Box-Muller (cosine branch) of two uint32 words to float32 N(0, 1).

    Evaluated in float64 like the reference: in float32, log/cos rounding times a radius of up to
    5.8 would exceed the 1e-6 agreement that all backends promise.
    """
    u1 = ((x0 >> 8) + 1).to(tl.float64) * 5.9604644775390625e-08  # 2**-24, exact
    u2 = (x1 >> 8).to(tl.float64) * 5.9604644775390625e-08
    radius = tl.sqrt(-2.0 * tl.log(u1))
    return (radius * tl.cos(6.283185307179586 * u2)).to(tl.float32)


# Integer arguments equal to 1 would otherwise become compile-time constants, which have no .to().
@triton.jit(do_not_specialize=["philox_step", "philox_iteration"])
def _philox_normal_kernel(key_ptr, x0_ptr, x1_ptr, normal_ptr, numel, philox_step, philox_iteration,
                          BLOCK: tl.constexpr):
    """Philox words and normals of the first ``numel`` elements of each sample (grid: blocks x B)."""
    sample = tl.program_id(1)
    element = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = element < numel
    x0, x1 = _philox_bits(key_ptr, sample, element, philox_step, philox_iteration)
    offset = sample.to(tl.int64) * numel + element
    tl.store(x0_ptr + offset, x0.to(tl.int64), mask=valid)
    tl.store(x1_ptr + offset, x1.to(tl.int64), mask=valid)
    tl.store(normal_ptr + offset, _bits_to_normal(x0, x1), mask=valid)


@triton.jit(do_not_specialize=["philox_step", "philox_iteration"])
def _pnp_update_kernel(
    # inputs (latents contiguous (B, C, S); masks (B, S); active (B,); philox key (B, 2) int64)
    z_ptr, v_ptr, v_uncond_ptr, prev_x0_ptr, prev_z_next_ptr, prev_certain_ptr, active_ptr,
    noise_ptr, philox_key_ptr,
    # outputs (same layouts); counts_ptr: (2, B) int32 zeroed: certain positions, nonfinite positions
    x0_ptr, z_next_ptr, certain_ptr, z_perturbed_ptr, uncertainty_ptr, counts_ptr,
    batch, spatial_size, num_pinned_positions,
    sigma, dt, one_minus_sigma, guidance_scale, tau,
    philox_step, philox_iteration,
    CHANNELS: tl.constexpr, CHANNELS_PADDED: tl.constexpr, BLOCK_SPATIAL: tl.constexpr,
    HAS_GUIDANCE: tl.constexpr, HAS_PREV: tl.constexpr, HAS_PREV_CERTAIN: tl.constexpr,
    HAS_ACTIVE: tl.constexpr, NOISE_MODE: tl.constexpr, P_NORM: tl.constexpr,
    WRITE_UNCERTAINTY: tl.constexpr, STORE_STATE: tl.constexpr,
):
    sample = tl.program_id(1)
    position = tl.program_id(0) * BLOCK_SPATIAL + tl.arange(0, BLOCK_SPATIAL)  # (S_blk,)
    channel = tl.arange(0, CHANNELS_PADDED)  # (C_pad,)
    in_range = position < spatial_size
    tile_mask = (channel < CHANNELS)[:, None] & in_range[None, :]
    # Offsets within a sample fit int32 (launcher checks C*S < 2**31); the sample base may not.
    element = channel[:, None] * spatial_size + position[None, :]
    sample_base = sample.to(tl.int64) * CHANNELS * spatial_size
    tile = sample_base + element
    mask_index = sample.to(tl.int64) * spatial_size + position

    free = position >= num_pinned_positions  # frames < num_pinned_frames are the condition
    pinned_tile = (position < num_pinned_positions)[None, :]

    z = tl.load(z_ptr + tile, mask=tile_mask, other=0.0)
    v = tl.load(v_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
    if HAS_GUIDANCE:
        v_uncond = tl.load(v_uncond_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
        v = v_uncond + guidance_scale * (v - v_uncond)

    x0 = z - sigma * v
    z_next = z + dt * v
    # x - x is NaN exactly when x is NaN or +-Inf; padded lanes load 0 and stay finite.
    nonfinite = tl.max(((x0 - x0) != 0.0).to(tl.int32), axis=0) != 0
    nonfinite = nonfinite & free & in_range

    if HAS_PREV:
        prev_x0 = tl.load(prev_x0_ptr + tile, mask=tile_mask, other=0.0)
        prev_z_next = tl.load(prev_z_next_ptr + tile, mask=tile_mask, other=0.0)
        diff = x0 - prev_x0
        if P_NORM == 1:
            norm = tl.sum(tl.abs(diff), axis=0)
        else:
            norm = tl.sqrt(tl.sum(diff * diff, axis=0))
        uncertainty = norm / CHANNELS
        certain = uncertainty < tau  # NaN compares False: a NaN position is never certain
        if HAS_PREV_CERTAIN:
            prev_certain = tl.load(prev_certain_ptr + mask_index, mask=in_range, other=0) != 0
            certain = certain | prev_certain
        certain = certain & free
        if HAS_ACTIVE:
            # An inactive sample left the step: keep every previous value, discard this prediction.
            keep = tl.load(active_ptr + sample) == 0  # bool tensors arrive as uint8 views
            if HAS_PREV_CERTAIN:
                certain = tl.where(keep, prev_certain, certain)
            else:
                certain = certain & ~keep
            uncertainty = tl.where(keep, 0.0, uncertainty)
            nonfinite = nonfinite & ~keep
            merge = certain | keep
        else:
            merge = certain
        x0 = tl.where(merge[None, :], prev_x0, x0)
        z_next = tl.where(merge[None, :], prev_z_next, z_next)
    else:
        uncertainty = tl.zeros((BLOCK_SPATIAL,), dtype=tl.float32)
        certain = position < 0  # all False
    certain = certain & in_range

    x0 = tl.where(pinned_tile, z, x0)
    z_next = tl.where(pinned_tile, z, z_next)
    tl.store(z_next_ptr + tile, z_next, mask=tile_mask)
    if STORE_STATE:
        tl.store(x0_ptr + tile, x0, mask=tile_mask)
        tl.store(certain_ptr + mask_index, certain.to(tl.uint8), mask=in_range)
    if WRITE_UNCERTAINTY:
        # A product, not a select, as in the reference: NaN stays NaN on pinned frames.
        tl.store(uncertainty_ptr + mask_index, uncertainty * free.to(tl.float32), mask=in_range)

    if NOISE_MODE != NOISE_NONE:
        if NOISE_MODE == NOISE_TENSOR:
            noise = tl.load(noise_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
        else:
            bits0, bits1 = _philox_bits(philox_key_ptr, sample, element, philox_step, philox_iteration)
            noise = _bits_to_normal(bits0, bits1)
        z_perturbed = tl.where(pinned_tile, z, one_minus_sigma * x0 + sigma * noise)
        tl.store(z_perturbed_ptr + tile, z_perturbed, mask=tile_mask)

    tl.atomic_add(counts_ptr + sample, tl.sum(certain.to(tl.int32), axis=0))
    tl.atomic_add(counts_ptr + batch + sample, tl.sum(nonfinite.to(tl.int32), axis=0))
