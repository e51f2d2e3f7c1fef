"""pnp_update per implementation: eager reference, torch.compile of the reference, Triton, CUDA (SPEC §6).

Each case records achieved GB/s from the bytes the op must move (``bytes_moved``) and the percent of
a device-to-device copy measured in the same run. Shapes: Wan latents on a GPU, tiny ones on CPU.
"""
from __future__ import annotations

import math
import os
import time
import zlib

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, bench_size, device_time, measure, median_seconds, skip_unless_backend_runs
from pnp_kernels import PhiloxNoise, PnPUpdateOutput, pnp_update
from pnp_kernels.ops.reference import pnp_update_reference

SHAPES = {
    "full": {
        "wan480p": (1, 16, 21, 60, 104),
        "wan720p": (1, 16, 21, 90, 160),
        "ti2v": (1, 48, 21, 44, 80),
    },
    "tiny": {
        "tiny-c16": (1, 16, 3, 6, 10),
        "tiny-c48": (2, 48, 2, 5, 7),
    },
}[bench_size()]
PROVIDERS = ("eager", "compiled", "triton", "cuda")
VELOCITY_DTYPE = torch.bfloat16
SIGMA, SIGMA_NEXT, GUIDANCE, TAU = 0.7, 0.65, 5.0, 0.25
# The refined iteration a guided run in generator-noise mode spends most updates on.
HEADLINE_VARIANT = (True, True, "tensor")  # guidance, previous iteration, noise


def bytes_moved(shape, *, guidance: bool, prev: bool, noise: str, velocity_bytes: int = 2) -> int:
    """Fewest bytes one update must move through memory (each input read once, each output written once).

    With N latent elements and P = N / C mask positions:
      read   z 4N, v velocity_bytes*N (twice with guidance), prev x0 + prev z_next 8N and prev mask P
             (with a previous iteration), explicit noise 4N (philox noise is computed, not read);
      write  x0 4N, z_next 4N, certain mask P, z_perturbed 4N (every case here perturbs).
    Per-sample outputs (certain fraction, non-finite count) are a few bytes and left out.
    """
    n = math.prod(shape)
    positions = n // shape[1]
    read = 4 * n + velocity_bytes * n * (2 if guidance else 1)
    if prev:
        read += 8 * n + positions
    if noise == "tensor":
        read += 4 * n
    write = 8 * n + positions + 4 * n
    return read + write


def make_inputs(shape, *, guidance: bool, prev: bool, noise: str, seed: int) -> dict:
    """Fresh random arguments of one update, as the sampler passes them."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(dtype=torch.float32):
        return torch.randn(shape, generator=g, device=DEVICE).to(dtype)

    args = dict(z=randn(), v=randn(VELOCITY_DTYPE), sigma=SIGMA, sigma_next=SIGMA_NEXT, tau=TAU)
    if guidance:
        args.update(v_uncond=randn(VELOCITY_DTYPE), guidance_scale=GUIDANCE)
    if prev:
        mask_shape = (shape[0], *shape[2:])
        args.update(
            prev_x0=randn(), prev_z_next=randn(),
            prev_certain=torch.rand(mask_shape, generator=g, device=DEVICE) < 0.3,
        )
    if noise == "tensor":
        args["noise"] = randn()
    else:
        args["noise"] = PhiloxNoise(tuple(seed + b for b in range(shape[0])), step=3, iteration=1)
    return args


def _output_slots(z: torch.Tensor) -> PnPUpdateOutput:
    mask_shape = (z.shape[0], *z.shape[2:])
    return PnPUpdateOutput(
        x0=torch.empty_like(z), z_next=torch.empty_like(z),
        certain=torch.empty(mask_shape, dtype=torch.bool, device=z.device),
        certain_fraction=None, nonfinite=None, z_perturbed=torch.empty_like(z), uncertainty=None,
    )


def _skip_unless_compiled_case(shape_name: str, variant: tuple) -> None:
    """torch.compile with max-autotune takes tens of seconds per case: run it where it answers the targets.

    PNP_BENCH_COMPILED_CASES: "headline" (default; the headline variant of every shape on a GPU, of
    the first shape on CPU) or "all".
    """
    which = os.environ.get("PNP_BENCH_COMPILED_CASES", "headline")
    if which not in ("headline", "all"):
        raise ValueError(f"PNP_BENCH_COMPILED_CASES must be 'headline' or 'all', got {which!r}")
    if which == "all":
        return
    if variant != HEADLINE_VARIANT:
        pytest.skip(f"compiled reference runs only the headline variant {HEADLINE_VARIANT} (PNP_BENCH_COMPILED_CASES=all for every case)")
    if not ON_GPU and shape_name != next(iter(SHAPES)):
        pytest.skip("torch.compile on CPU is slow to compile: one tiny case only")


def _provider_fn(provider: str, args: dict, shape_name: str, variant: tuple):
    if provider == "eager":
        return lambda: pnp_update_reference(**args)
    if provider == "compiled":
        _skip_unless_compiled_case(shape_name, variant)
        torch._dynamo.reset()  # one fresh compile per case: no recompile limit, no cache carried over
        compiled = torch.compile(pnp_update_reference, mode="max-autotune-no-cudagraphs")
        return lambda: compiled(**args)
    skip_unless_backend_runs(provider, args["z"], args["v"], args.get("v_uncond"))
    out = _output_slots(args["z"])
    return lambda: pnp_update(**args, out=out, backend=provider)


@pytest.fixture(scope="module")
def copy_gbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) measured in this run."""
    numel = (256 if ON_GPU else 8) * 2**20  # a 1 GiB (GPU) / 32 MiB (CPU) float32 source: far beyond any cache
    src = torch.randn(numel, device=DEVICE)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    if ON_GPU:
        return moved / (device_time(lambda: dst.copy_(src))["median_ms"] / 1e3)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - started)
    return moved / sorted(times)[len(times) // 2]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("noise", ["tensor", "philox"])
@pytest.mark.parametrize("prev", [False, True], ids=["first", "prev"])
@pytest.mark.parametrize("guidance", [False, True], ids=["noguide", "guide"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_pnp_update(benchmark, copy_gbps, shape_name, guidance, prev, noise, provider):
    shape = SHAPES[shape_name]
    variant = (guidance, prev, noise)
    seed = zlib.crc32(repr((shape_name, variant)).encode())  # the same inputs for every provider
    args = make_inputs(shape, guidance=guidance, prev=prev, noise=noise, seed=seed)
    fn = _provider_fn(provider, args, shape_name, variant)
    benchmark.group = f"pnp_update {shape_name}"
    measure(benchmark, fn)
    moved = bytes_moved(shape, guidance=guidance, prev=prev, noise=noise)
    benchmark.extra_info.update(
        op="pnp_update", provider=provider, shape=list(shape), shape_name=shape_name,
        guidance=guidance, prev=prev, noise=noise, bytes=moved, copy_gbps=copy_gbps / 1e9,
    )
    seconds = median_seconds(benchmark)
    if seconds:
        benchmark.extra_info["gbps"] = moved / seconds / 1e9
        benchmark.extra_info["percent_of_copy"] = 100.0 * moved / seconds / copy_gbps
