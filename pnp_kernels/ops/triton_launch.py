"""Launcher of the Triton P&P update: layouts, grid and block sizes.

Inputs come validated as ``PnPUpdateInputs``, outputs as the buffers of ``outputs.py``. Per call it
allocates one (B,) int32 counter (a few bytes, zeroed by the same call, so concurrent streams
never share it). Non-contiguous inputs are copied to contiguous ones; a non-contiguous output
buffer is computed in a contiguous one and copied back: correct, at the price of a pass.
"""
from __future__ import annotations

import functools
import math

import torch
import triton

from .inputs import PnPUpdateInputs
from .outputs import PnPUpdateOutput, contiguous_buffers, copy_back, write_certain_fraction
from .philox import NORMALS_PER_CALL, PhiloxNoise
from .triton_kernel import NOISE_NONE, NOISE_PHILOX, NOISE_TENSOR, _philox_normal_kernel, _pnp_update_kernel

# Elements per program and chunk (channels x positions) and warps: 8 elements of each latent per thread.
# Chosen from ptxas register counts for sm_90 (every operand of a chunk fits in registers); the GPU
# suite's device times are what would justify another choice.
TILE_ELEMENTS = 2048
NUM_WARPS = 8
MAX_SPATIAL_MULTIPLE = 16  # 16 float32 = 64 bytes: more alignment buys no wider load


MAX_CHANNEL_CHUNK = 16  # channels per pass of the kernel's channel loop


def _next_power_of_2(n: int) -> int:
    # Plain Python: triton.next_power_of_2 is a constexpr function, several microseconds per host call.
    return 1 << (n - 1).bit_length()


def channel_chunk(channels: int) -> int:
    """Channels the kernel handles at once: a power of two, at most 16 (C = 48 is three chunks, not 64 lanes)."""
    return min(_next_power_of_2(channels), MAX_CHANNEL_CHUNK)


def block_spatial(channels: int) -> int:
    """Spatial positions per program for ``channels`` >= 1 channels (all channels stay in one program)."""
    return max(16, min(512, TILE_ELEMENTS // channel_chunk(channels)))


def spatial_multiple(positions: int) -> int:
    """The largest power of two up to 16 that divides ``positions`` (the kernel's alignment hint)."""
    if positions == 0:
        return MAX_SPATIAL_MULTIPLE
    return min(positions & -positions, MAX_SPATIAL_MULTIPLE)


@functools.lru_cache(maxsize=64)
def launch_shape(channels: int, spatial: int) -> tuple[int, int, int]:
    """(channel chunk, spatial block, spatial multiple) for a latent: computed once per shape."""
    return channel_chunk(channels), block_spatial(channels), spatial_multiple(spatial)


def run_triton(inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
    """``reference_update(inputs)`` in one Triton kernel launch, written into ``outputs``."""
    z = inputs.z.contiguous()
    batch, channels, frames, height, width = z.shape
    spatial = frames * height * width
    written = contiguous_buffers(outputs)
    philox = inputs.philox
    if philox is not None:
        noise_mode, noise_tensor = NOISE_PHILOX, None
        # key_table is cached per (seeds, device): no host-to-device copy per call.
        philox_key, philox_step, philox_iteration = philox.key_table(z.device), philox.step, philox.iteration
    else:
        noise_mode = NOISE_NONE if inputs.noise is None else NOISE_TENSOR
        noise_tensor, philox_key, philox_step, philox_iteration = inputs.noise, None, 0, 0
    # Counted with atomics: certain positions into a zeroed scratch, non-finite ones into the output.
    certain_count = torch.zeros_like(written.nonfinite)  # (B,) int32
    written.nonfinite.zero_()

    def dense(t: torch.Tensor | None) -> torch.Tensor:
        # Contiguous, as the kernel indexes densely; z stands in where the constexpr flags switch a use off.
        return z if t is None else t.contiguous()

    chunk, block, multiple = launch_shape(channels, spatial)
    grid = (-(-spatial // block), batch)  # ceil division
    if batch * spatial > 0:  # an empty grid is no launch; the counts stay 0, as in the reference
        sigma = inputs.sigma
        _pnp_update_kernel[grid](
            z, dense(inputs.v), dense(inputs.v_uncond), dense(inputs.prev_x0), dense(inputs.prev_z_next),
            dense(inputs.prev_certain), dense(inputs.active), dense(noise_tensor),
            dense(philox_key), dense(written.x0), written.z_next, dense(written.certain),
            dense(written.z_perturbed), dense(written.uncertainty), certain_count, written.nonfinite,
            spatial // multiple, inputs.num_pinned_frames * height * width,
            # Scalars are formed in float64 on the host; Triton passes them as float32, as torch
            # rounds Python scalars for float32 tensors in the reference.
            sigma, inputs.sigma_next - sigma, 1.0 - sigma, inputs.guidance_scale, inputs.tau,
            philox_step, philox_iteration,
            CHANNELS=channels, CHANNEL_CHUNK=chunk, BLOCK_SPATIAL=block, SPATIAL_MULTIPLE=multiple,
            HAS_GUIDANCE=inputs.v_uncond is not None, HAS_PREV=inputs.prev_x0 is not None,
            HAS_PREV_CERTAIN=inputs.prev_certain is not None, HAS_ACTIVE=inputs.active is not None,
            NOISE_MODE=noise_mode.value, P_NORM=inputs.p_norm, WRITE_UNCERTAINTY=inputs.return_uncertainty,
            STORE_STATE=inputs.store_state, num_warps=NUM_WARPS,
            # Separate multiply and add, as the reference rounds them: bit-level agreement costs a
            # memory-bound kernel nothing, and keeps Triton 3.9's fusion default out of the results.
            enable_fp_fusion=False,
        )
    write_certain_fraction(written, certain_count, inputs)
    copy_back(written, outputs)


def triton_philox(noise: PhiloxNoise, sample_shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton side of the philox spec, for checking it against ``philox.py`` bit for bit.

    Returns the words (B, calls, 4) (int64 holding uint32) of counters 0 .. calls-1, calls =
    ceil(numel / 4), and the float32 normals (B, *sample_shape).
    """
    numel = math.prod(sample_shape)
    if numel > 2**32:
        raise ValueError(f"a sample of shape {tuple(sample_shape)} has more than 2**32 elements")
    batch = len(noise.seeds)
    calls = triton.cdiv(numel, NORMALS_PER_CALL)
    words = torch.empty((batch, calls, 4), dtype=torch.int64, device=device)
    normals = torch.empty((batch, calls * NORMALS_PER_CALL), dtype=torch.float32, device=device)
    block = 256
    _philox_normal_kernel[(triton.cdiv(calls, block), batch)](
        noise.key_table(device), words, normals, calls, noise.step, noise.iteration, BLOCK=block,
    )
    return words, normals[:, :numel].reshape(batch, *sample_shape)
