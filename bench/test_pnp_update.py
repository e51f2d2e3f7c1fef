"""pnp_update device time per provider: eager reference, torch.compile of the reference, Triton, CUDA.

Every provider is called the same way, ``provider(inputs)`` (``bench/update_cases.py``), and timed the same way: CUDA-graph
replays cycling through input sets larger than the L2 cache (``graph_replay_time``), so the figure is
device time with no host work in it. Each case records achieved GB/s from the bytes the variant must
move and the percent of a device-to-device copy measured in the same run. Shapes: Wan latents on a
GPU, tiny ones on CPU (host timing there). ``test_pnp_update_host_time`` is the other figure: the host
time of one public call on the eager launch path.
"""
from __future__ import annotations

import time
import zlib

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, graph_replay_time, host_rounds, median_seconds, rotation_sets, synchronize
from bench.update_cases import (HEADLINE, PROVIDERS, backend_reasons, bytes_moved, copied, make_inputs,
                                provider_function, shapes, variants)
from pnp_kernels import pnp_update


def _cases() -> list:
    """Most important first, so that a run stopped part-way has the targets' cases: the headline
    variant of every shape, then the other variants; providers in PROVIDERS order within each."""
    ordered = [HEADLINE] + [v for v in variants() if v != HEADLINE]
    return [pytest.param(shape_name, variant, provider,
                         id=f"{shape_name}-{variant.name.replace(', ', '-').replace(' ', '_')}-{provider}")
            for variant in ordered for shape_name in shapes() for provider in PROVIDERS]


def _skip_unless_compiled_case(shape_name: str, variant) -> None:
    """Compiling takes seconds per case: only the headline variant (the targets' case), and on CPU one shape."""
    if variant != HEADLINE:
        pytest.skip(f"the compiled reference is timed on the headline variant ({HEADLINE.name}) only")
    if not ON_GPU and shape_name != next(iter(shapes())):
        pytest.skip("on CPU one compiled case shows the code path")


@pytest.fixture(scope="module")
def copy_gbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), timed like the update."""
    numel = (256 if ON_GPU else 8) * 2**20  # 1 GiB (GPU) / 32 MiB (CPU) of float32: far beyond any cache
    src = torch.randn(numel, device=DEVICE)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    if ON_GPU:
        return moved / (graph_replay_time(lambda _: dst.copy_(src), [None])["median_ms"] / 1e3)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - started)
    return moved / sorted(times)[len(times) // 2]


@pytest.mark.parametrize("shape_name, variant, provider", _cases())
def test_pnp_update(benchmark, copy_gbps, shape_name, variant, provider):
    shape = shapes()[shape_name]
    seed = zlib.crc32(repr((shape_name, variant)).encode())  # the same inputs for every provider
    inputs = make_inputs(shape, variant, seed)
    if provider == "compiled":
        _skip_unless_compiled_case(shape_name, variant)
    if provider in ("triton", "cuda"):
        reasons = backend_reasons(provider, inputs)
        if reasons:
            pytest.skip(f"backend {provider!r} cannot run here: {'; '.join(reasons)}")
    update = provider_function(provider)
    moved = bytes_moved(shape, variant)
    benchmark.group = f"pnp_update {shape_name}"
    if ON_GPU and not benchmark.disabled:
        input_sets = [inputs] + [copied(inputs) for _ in range(rotation_sets(moved) - 1)]
        benchmark.extra_info["device_time"] = graph_replay_time(update, input_sets)
        host_rounds(benchmark, lambda: update(inputs), rounds=3)
    else:
        host_rounds(benchmark, lambda: update(inputs))
    benchmark.extra_info.update(
        op="pnp_update", provider=provider, shape=list(shape), shape_name=shape_name,
        guidance=variant.guidance, prev=variant.prev, noise=variant.noise, bytes=moved, copy_gbps=copy_gbps / 1e9,
    )
    seconds = median_seconds(benchmark)
    if seconds:
        benchmark.extra_info["gbps"] = moved / seconds / 1e9
        benchmark.extra_info["percent_of_copy"] = 100.0 * moved / seconds / copy_gbps


# About 0.1 s of device time on any current GPU (cycles at ~2 GHz): the host never waits behind it.
SPIN_CYCLES = 200_000_000
HOST_CALLS = 200


@pytest.mark.parametrize("provider", ["triton", "cuda"])
def test_pnp_update_host_time(benchmark, provider):
    """Host time of one public pnp_update call on the eager launch path (checks, backend choice, buffers,
    the real kernel launch), the headline variant on the first shape. On a GPU a spin kernel queued first
    keeps the device busy, so the host issues every call without waiting and the figure is host work alone."""
    shape_name, shape = next(iter(shapes().items()))
    inputs = make_inputs(shape, HEADLINE, seed=1)
    reasons = backend_reasons(provider, inputs)
    if reasons:
        pytest.skip(f"backend {provider!r} cannot run here: {'; '.join(reasons)}")
    options = {f: getattr(inputs, f) for f in ("v_uncond", "guidance_scale", "prev_x0", "prev_z_next", "prev_certain",
                                                "tau", "noise", "store_state")}
    out = provider_function(provider)(inputs)  # caller-owned buffers, as the sampler passes them

    def call():
        pnp_update(inputs.z, inputs.v, inputs.sigma, inputs.sigma_next, out=out, backend=provider, **options)

    call()  # compile and load before timing
    synchronize()
    benchmark.group = "pnp_update host time"
    if ON_GPU:
        torch.cuda._sleep(SPIN_CYCLES)
    benchmark.pedantic(call, rounds=HOST_CALLS if ON_GPU and not benchmark.disabled else 1, warmup_rounds=0)
    synchronize()
    benchmark.extra_info.update(op="pnp_update launch", provider=provider, shape=list(shape), shape_name=shape_name,
                                timing="host time per call" + ("" if ON_GPU else " (CPU-only)"))
