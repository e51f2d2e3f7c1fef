"""What only the Triton backend has: auto's device rule, the sm_90 compile with vector loads, the
Philox helper kernel. Its values are checked against the reference in test_gpu_backends.py."""
from __future__ import annotations

import collections
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnp_kernels.ops.backends import BACKENDS, select_backend
from pnp_kernels.ops.philox import PhiloxNoise, philox_bits, philox_normal
from pnp_kernels.ops.triton_launch import block_spatial, channel_chunk, spatial_multiple

from .helpers import TRITON_DEVICES

REPO = Path(__file__).resolve().parents[2]


def test_auto_picks_triton_for_cuda_tensors_only():
    cpu = torch.zeros(1, 4, 1, 2, 2)
    assert select_backend("auto", cpu, cpu, None).name != "triton"
    if torch.cuda.is_available():
        assert select_backend("auto", cpu.cuda(), cpu.cuda(), None) is BACKENDS["triton"]


@pytest.mark.parametrize("positions, multiple", [(16 * 97, 16), (21 * 30 * 52, 8), (12, 4), (6, 2), (35, 1), (0, 16)])
def test_spatial_multiple_is_the_largest_power_of_two_divisor_up_to_16(positions, multiple):
    assert spatial_multiple(positions) == multiple


@pytest.mark.parametrize("channels, chunk, idle", [(4, 4, 0), (16, 16, 0), (48, 16, 0), (64, 16, 0), (20, 16, 12)])
def test_channels_go_in_chunks_of_at_most_16(channels, chunk, idle):
    assert channel_chunk(channels) == chunk
    assert -channels % chunk == idle  # padded lanes of the last chunk: none for Wan's 16 and TI2V's 48
    assert block_spatial(channels) * chunk == 2048  # elements per program and chunk


@pytest.mark.parametrize("backend, device", TRITON_DEVICES)
def test_philox_kernel_words_equal_reference(backend, device):
    from pnp_kernels.ops.triton_launch import triton_philox

    fresh = int(torch.randint(0, 2**63 - 1, ()))
    # Edge keys (0, all ones, a high word only) and edge counters next to fresh ones.
    noise = PhiloxNoise((0, 2**64 - 1, 2**32, fresh), step=2**32 - 1, iteration=int(torch.randint(1, 2**31, ())))
    shape = (3, 7, 5, 11)  # 1155 elements: the last Philox call serves 3 of its 4 slots
    words, normal = triton_philox(noise, shape, device)
    calls = math.ceil(math.prod(shape) / 4)
    counter = torch.arange(calls)
    zero = torch.zeros((), dtype=torch.int64)
    for b, seed in enumerate(noise.seeds):
        expected = philox_bits((counter, zero, zero + noise.step, zero + noise.iteration), (seed & 0xFFFFFFFF, seed >> 32))
        assert torch.equal(words[b].cpu(), torch.stack(expected, dim=1)), f"seed {seed}"
    torch.testing.assert_close(normal.cpu(), philox_normal(noise, shape), atol=1e-6, rtol=1e-6)


# velocity dtype, constexpr flags (the rest as in helpers.compile_for_hopper), vector loads expected
KERNEL_VARIANTS = [
    ("bf16", {}, True),
    ("fp16", dict(CHANNELS=48, CHANNEL_CHUNK=16, BLOCK_SPATIAL=128, SPATIAL_MULTIPLE=8, NOISE_MODE=1, P_NORM=2), True),
    ("fp32", dict(HAS_GUIDANCE=False, HAS_PREV=False, HAS_PREV_CERTAIN=False, HAS_ACTIVE=False, NOISE_MODE=0,
                  WRITE_UNCERTAINTY=False, STORE_STATE=False, SPATIAL_MULTIPLE=8), True),
    ("bf16", dict(SPATIAL_MULTIPLE=2, NOISE_MODE=2), False),  # S = 2 mod 4: philox one element at a time
]


@pytest.mark.parametrize("velocity_dtype, flags, vectorized", KERNEL_VARIANTS)
def test_kernel_compiles_for_hopper_without_a_gpu(velocity_dtype, flags, vectorized):
    """The interpreter never lowers to PTX; compiling for sm_90 with Triton's bundled ptxas catches
    what only the GPU path would reject, and shows the loads the compiler chose: 16-byte vector
    loads of the float32 latents whenever S is a multiple of 4 (8 for TI2V's 30x52 frames).
    A subprocess, because kernels defined under TRITON_INTERPRET=1 cannot be compiled."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = f"from tests.ops.helpers import compile_for_hopper; print(compile_for_hopper({velocity_dtype!r}, {flags!r}))"
    # Run from the repository root, where the test package is importable as it is under pytest.
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if "ptxas" in done.stderr and "not found" in done.stderr.lower():
        pytest.skip("this triton install has no ptxas")
    assert done.returncode == 0, done.stderr[-3000:]
    accesses = collections.Counter(re.findall(r"(?:ld|st)\.global(?:\.nc)?(?:\.v\d)?\.b32", done.stdout))
    vector = sum(n for kind, n in accesses.items() if ".v4." in kind)
    assert (vector > 0) == vectorized, accesses
    # Box-Muller in precise float32 (libdevice), as the other backends: no hardware approximations.
    assert not re.search(r"(sin|cos|lg2|ex2)\.approx", done.stdout)
