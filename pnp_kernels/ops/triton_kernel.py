"""Triton kernels of the fused P&P update; the math is ``ops/reference.py``, the launcher ``triton_launch.py``.

One program owns a block of spatial positions (flat index s into F*H*W) of one sample and all C
channels of them, so the channel reduction of the uncertainty stays in the program and every latent
element is read from memory once and written once.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Values of the NOISE_MODE constexpr: where the noise of z_perturbed comes from.
NOISE_NONE = tl.constexpr(0)  # no next iteration: z_perturbed is not written
NOISE_TENSOR = tl.constexpr(1)
NOISE_PHILOX = tl.constexpr(2)

TWO_PI_FLOAT32 = tl.constexpr(6.2831854820251465)  # float32(2 pi), as in philox.py


@triton.jit
def _philox_words(key_ptr, sample, counter, philox_step, philox_iteration):
    """The four words of Philox4x32-10 for counter (counter, 0, step, iteration) and the sample's key (philox.py)."""
    k0 = tl.load(key_ptr + 2 * sample).to(tl.uint64)
    k1 = tl.load(key_ptr + 2 * sample + 1).to(tl.uint64)
    # tl.philox takes the 64-bit key as one integer: low word k0, high word k1.
    seed = (k1 << 32) | k0
    counter0 = counter.to(tl.uint32)  # < 2**30: elements < 2**32 are checked by the launcher
    zero = tl.zeros_like(counter0)
    step = zero + philox_step.to(tl.uint32)
    iteration = zero + philox_iteration.to(tl.uint32)
    return tl.philox(seed, counter0, zero, step, iteration, 10)


@triton.jit
def _box_muller(a, b):
    """The two float32 N(0, 1) of the word pair (a, b): (r cos t, r sin t), as ``philox.box_muller``."""
    u1 = ((a >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08  # 2**-24, exact
    u2 = (b >> 8).to(tl.float32) * 5.9604644775390625e-08
    radius = tl.sqrt_rn(-2.0 * tl.log(u1))
    angle = u2 * TWO_PI_FLOAT32
    return radius * tl.cos(angle), radius * tl.sin(angle)


@triton.jit
def _philox_normal(key_ptr, sample, element, philox_step, philox_iteration):
    """The normal of each element on its own: four words per element, one of them used (odd shapes)."""
    x0, x1, x2, x3 = _philox_words(key_ptr, sample, element >> 2, philox_step, philox_iteration)
    second_pair = (element & 2) != 0
    cos_part, sin_part = _box_muller(tl.where(second_pair, x2, x0), tl.where(second_pair, x3, x1))
    return tl.where((element & 1) != 0, sin_part, cos_part)


@triton.jit
def _philox_normal_groups(key_ptr, sample, group_counter, philox_step, philox_iteration):
    """Normals of four consecutive elements per entry of ``group_counter`` (shape (R, G)), as (R, 4G):
    one Philox call and two Box-Muller pairs per four elements, every word used."""
    x0, x1, x2, x3 = _philox_words(key_ptr, sample, group_counter, philox_step, philox_iteration)
    n0, n1 = _box_muller(x0, x1)
    n2, n3 = _box_muller(x2, x3)
    # join(join(a, c), join(b, d)) lays out a, b, c, d along the last axis.
    grouped = tl.join(tl.join(n0, n2), tl.join(n1, n3))
    return tl.reshape(grouped, (group_counter.shape[0], 4 * group_counter.shape[1]))


# Integer arguments equal to 1 would otherwise become compile-time constants, which have no .to().
@triton.jit(do_not_specialize=["philox_step", "philox_iteration"])
def _philox_normal_kernel(key_ptr, words_ptr, normal_ptr, calls, philox_step, philox_iteration,
                          BLOCK: tl.constexpr):
    """Words (B, calls, 4) of each sample's first ``calls`` counters and their normals (B, 4 * calls)."""
    sample = tl.program_id(1).to(tl.int64)
    first = tl.program_id(0).to(tl.int64) * BLOCK
    counter = first + tl.arange(0, BLOCK)
    words = _philox_words(key_ptr, sample, counter, philox_step, philox_iteration)
    for i in tl.static_range(4):
        tl.store(words_ptr + (sample * calls + counter) * 4 + i, words[i].to(tl.int64), mask=counter < calls)
    normals = _philox_normal_groups(key_ptr, sample, counter[None, :], philox_step, philox_iteration)
    slot = first * 4 + tl.arange(0, 4 * BLOCK)
    tl.store(normal_ptr + sample * calls * 4 + slot[None, :], normals, mask=(slot < calls * 4)[None, :])


@triton.jit
def _predict(z_ptr, v_ptr, v_uncond_ptr, tile, tile_mask, sigma, dt, guidance_scale, HAS_GUIDANCE: tl.constexpr):
    """z, the clean prediction x0 and the Euler proposal z_next of one tile, in float32."""
    z = tl.load(z_ptr + tile, mask=tile_mask, other=0.0)
    v = tl.load(v_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
    if HAS_GUIDANCE:
        v_uncond = tl.load(v_uncond_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
        v = v_uncond + guidance_scale * (v - v_uncond)
    return z, z - sigma * v, z + dt * v


@triton.jit(do_not_specialize=["philox_step", "philox_iteration"])
def _pnp_update_kernel(
    # inputs (latents contiguous (B, C, S); masks (B, S); active (B,); philox key (B, 2) int64)
    z_ptr, v_ptr, v_uncond_ptr, prev_x0_ptr, prev_z_next_ptr, prev_certain_ptr, active_ptr,
    noise_ptr, philox_key_ptr,
    # outputs (same layouts); certain_count_ptr, nonfinite_ptr: (B,) int32, zeroed, counted atomically
    x0_ptr, z_next_ptr, certain_ptr, z_perturbed_ptr, uncertainty_ptr, certain_count_ptr, nonfinite_ptr,
    spatial_units, num_pinned_positions,
    sigma, dt, one_minus_sigma, guidance_scale, tau,
    philox_step, philox_iteration,
    CHANNELS: tl.constexpr, CHANNEL_CHUNK: tl.constexpr, BLOCK_SPATIAL: tl.constexpr,
    SPATIAL_MULTIPLE: tl.constexpr,
    HAS_GUIDANCE: tl.constexpr, HAS_PREV: tl.constexpr, HAS_PREV_CERTAIN: tl.constexpr,
    HAS_ACTIVE: tl.constexpr, NOISE_MODE: tl.constexpr, P_NORM: tl.constexpr,
    WRITE_UNCERTAINTY: tl.constexpr, STORE_STATE: tl.constexpr,
):
    # S = F*H*W arrives as S / SPATIAL_MULTIPLE, the largest power of two (<= 16) dividing S. The
    # product tells the compiler that every channel row starts aligned, so it keeps vector loads
    # when S is not a multiple of 16 (TI2V 480p: 30x52 per frame), where value specialization
    # (multiples of 16 only) would not; only the masked tail of the last block is partial.
    spatial_size = spatial_units * SPATIAL_MULTIPLE
    sample = tl.program_id(1)
    position = tl.program_id(0) * BLOCK_SPATIAL + tl.arange(0, BLOCK_SPATIAL)  # (S_blk,)
    in_range = position < spatial_size
    # Offsets within a sample fit int32 (launcher checks C*S < 2**31); the sample base may not.
    sample_base = sample.to(tl.int64) * CHANNELS * spatial_size
    mask_index = sample.to(tl.int64) * spatial_size + position
    free = position >= num_pinned_positions  # frames < num_pinned_frames are the condition
    pinned_tile = (position < num_pinned_positions)[None, :]
    # Channels go in chunks of CHANNEL_CHUNK (a power of two), so C = 48 takes three full chunks
    # instead of 64 lanes of which 16 idle. Pass 1 decides per position; pass 2 merges and writes.
    # With one chunk (C <= 16) pass 2 reuses pass 1's values; with more it loads each chunk again
    # (from cache: the program read it a moment ago), as keeping all of them would cost registers.
    NUM_CHUNKS: tl.constexpr = (CHANNELS + CHANNEL_CHUNK - 1) // CHANNEL_CHUNK
    chunk_channel = tl.arange(0, CHANNEL_CHUNK)

    # Pass 1: non-finite predictions and the channel norm of the change.
    nonfinite = position < 0  # all False
    norm = tl.zeros((BLOCK_SPATIAL,), dtype=tl.float32)
    for chunk in tl.static_range(NUM_CHUNKS):
        channel = chunk * CHANNEL_CHUNK + chunk_channel
        tile_mask = (channel < CHANNELS)[:, None] & in_range[None, :]
        tile = sample_base + channel[:, None] * spatial_size + position[None, :]
        z, x0, z_next = _predict(z_ptr, v_ptr, v_uncond_ptr, tile, tile_mask, sigma, dt, guidance_scale, HAS_GUIDANCE)
        # x - x is NaN exactly when x is NaN or +-Inf; padded lanes load 0 and stay finite.
        nonfinite = nonfinite | (tl.max(((x0 - x0) != 0.0).to(tl.int32), axis=0) != 0)
        if HAS_PREV:
            prev_x0 = tl.load(prev_x0_ptr + tile, mask=tile_mask, other=0.0)
            diff = x0 - prev_x0
            if P_NORM == 1:
                norm += tl.sum(tl.abs(diff), axis=0)
            else:
                norm += tl.sum(diff * diff, axis=0)
    nonfinite = nonfinite & free & in_range

    merge = position < 0  # take the previous iteration's x0 / z_next (all False without one)
    if HAS_PREV:
        if P_NORM == 2:
            norm = tl.sqrt(norm)
        uncertainty = norm / CHANNELS
        certain = uncertainty < tau  # NaN compares False: a NaN position is never certain
        if HAS_PREV_CERTAIN:
            prev_certain = tl.load(prev_certain_ptr + mask_index, mask=in_range, other=0) != 0
            certain = certain | prev_certain
        certain = certain & free
        if HAS_ACTIVE:
            # An inactive sample left the step: keep every previous value, discard this prediction.
            keep = tl.load(active_ptr + sample) == 0  # Triton reads a bool tensor's bytes as int1
            if HAS_PREV_CERTAIN:
                certain = tl.where(keep, prev_certain, certain)
            else:
                certain = certain & ~keep
            uncertainty = tl.where(keep, 0.0, uncertainty)
            nonfinite = nonfinite & ~keep
            merge = certain | keep
        else:
            merge = certain
    else:
        uncertainty = tl.zeros((BLOCK_SPATIAL,), dtype=tl.float32)
        certain = position < 0  # all False
    certain = certain & in_range
    merge_tile = (merge != 0)[None, :]

    if STORE_STATE:
        tl.store(certain_ptr + mask_index, certain.to(tl.uint8), mask=in_range)
    if WRITE_UNCERTAINTY:
        # A product, not a select, as in the reference: NaN stays NaN on pinned frames.
        tl.store(uncertainty_ptr + mask_index, uncertainty * free.to(tl.float32), mask=in_range)

    # Pass 2: merge, pin, perturb and write, chunk by chunk.
    for chunk in tl.static_range(NUM_CHUNKS):
        channel = chunk * CHANNEL_CHUNK + chunk_channel
        tile_mask = (channel < CHANNELS)[:, None] & in_range[None, :]
        element = channel[:, None] * spatial_size + position[None, :]
        tile = sample_base + element
        if NUM_CHUNKS > 1:
            z, x0, z_next = _predict(z_ptr, v_ptr, v_uncond_ptr, tile, tile_mask, sigma, dt, guidance_scale,
                                     HAS_GUIDANCE)
        if HAS_PREV:
            # Read only where taken: certain regions are contiguous runs, whose sectors are skipped.
            taken = tile_mask & merge_tile
            if NUM_CHUNKS > 1:
                prev_x0 = tl.load(prev_x0_ptr + tile, mask=taken, other=0.0)
            x0 = tl.where(merge_tile, prev_x0, x0)
            z_next = tl.where(merge_tile, tl.load(prev_z_next_ptr + tile, mask=taken, other=0.0), z_next)
        x0 = tl.where(pinned_tile, z, x0)
        z_next = tl.where(pinned_tile, z, z_next)
        tl.store(z_next_ptr + tile, z_next, mask=tile_mask)
        if STORE_STATE:
            tl.store(x0_ptr + tile, x0, mask=tile_mask)
        if NOISE_MODE != NOISE_NONE:
            if NOISE_MODE == NOISE_TENSOR:
                noise = tl.load(noise_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
            elif SPATIAL_MULTIPLE % 4 == 0:
                # Four consecutive positions of one channel are four consecutive elements of one Philox call.
                group = tl.program_id(0) * (BLOCK_SPATIAL // 4) + tl.arange(0, BLOCK_SPATIAL // 4)
                counter = channel[:, None] * (spatial_size // 4) + group[None, :]
                noise = _philox_normal_groups(philox_key_ptr, sample, counter, philox_step, philox_iteration)
            else:
                noise = _philox_normal(philox_key_ptr, sample, element, philox_step, philox_iteration)
            z_perturbed = tl.where(pinned_tile, z, one_minus_sigma * x0 + sigma * noise)
            tl.store(z_perturbed_ptr + tile, z_perturbed, mask=tile_mask)

    tl.atomic_add(certain_count_ptr + sample, tl.sum(certain.to(tl.int32), axis=0))
    tl.atomic_add(nonfinite_ptr + sample, tl.sum(nonfinite.to(tl.int32), axis=0))
