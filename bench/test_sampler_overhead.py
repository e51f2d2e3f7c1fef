"""Sampler overhead: a refined pnp_sample run on a denoiser stub of fixed cost vs the same number of
bare stub calls. The difference is everything the sampler adds (updates, noise, host reads), per
NFE and as a share of the run (the target, docs/PERFORMANCE.md: under 0.5% of a refined run on the
Wan2.1-1.3B transformer; the report puts the per-NFE figure next to the measured transformer forward).
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, bench_size, env_int, flow_sigmas, skip_unless_backend_runs, synchronize
from pnp_kernels import DEFAULT_PLAN, Guided, PnPConfig, pnp_sample

LATENTS = {"full": (1, 16, 21, 60, 104), "tiny": (1, 16, 3, 6, 10)}[bench_size()]
NUM_STEPS = 50  # the published default plan is for 50 steps
GUIDANCE = 5.0


class FixedCostDenoiser:
    """Returns fixed bf16 velocities after a fixed delay: a spin kernel on a GPU (so host work can
    overlap it, as with a real model), a sleep on CPU."""

    def __init__(self, latents: torch.Tensor, cost_ms: float):
        g = torch.Generator(device=latents.device).manual_seed(7)
        self.cond = torch.randn(latents.shape, generator=g, device=latents.device).bfloat16()
        self.uncond = torch.randn(latents.shape, generator=g, device=latents.device).bfloat16()
        self.cost_ms = cost_ms
        self.spin_cycles = _cycles_for(cost_ms) if ON_GPU else 0

    def __call__(self, z, step, sigma):
        if ON_GPU:
            torch.cuda._sleep(self.spin_cycles)
        else:
            time.sleep(self.cost_ms / 1e3)
        return Guided(self.cond, self.uncond, GUIDANCE)


def _cycles_for(ms: float) -> int:
    """Spin-kernel cycles that take ``ms`` of device time on this GPU (measured, not from the clock spec)."""
    probe = 1_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(probe)  # first launch loads the kernel
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    torch.cuda.synchronize()
    return int(probe * ms / start.elapsed_time(end))


@pytest.mark.parametrize("noise", ["generator", "philox"])
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_sampler_overhead(benchmark, backend, noise):
    latents = torch.randn(LATENTS, generator=torch.Generator(device=DEVICE).manual_seed(1), device=DEVICE)
    stub = FixedCostDenoiser(latents, cost_ms=env_int("PNP_BENCH_STUB_MS", 5 if ON_GPU else 2))
    skip_unless_backend_runs(backend, latents, stub.cond, stub.uncond)
    config = PnPConfig(plan=DEFAULT_PLAN, noise=noise, backend=backend)
    sigmas = flow_sigmas(NUM_STEPS)
    runs = []

    def refined_run():
        source = dict(seed=3) if noise == "philox" else dict(generator=torch.Generator(device=DEVICE).manual_seed(3))
        runs.append(pnp_sample(stub, latents, sigmas, config, **source))

    def bare_calls(count: int) -> float:
        synchronize()
        started = time.perf_counter()
        for i in range(count):
            stub(latents, i, sigmas[0])
        synchronize()
        return time.perf_counter() - started

    rounds = env_int("PNP_BENCH_SAMPLER_ROUNDS", 3)
    benchmark.group = "sampler overhead"
    # Host wall time on purpose: the overhead includes host work and syncs, not only device time.
    benchmark.pedantic(lambda: (refined_run(), synchronize()), rounds=rounds, warmup_rounds=0 if benchmark.disabled else 1)
    stats = runs[-1].stats
    bare = statistics.median(bare_calls(stats.nfe) for _ in range(rounds))
    refined = statistics.median(r.stats.time_total for r in runs[-rounds:])  # the warm-up run left out
    benchmark.extra_info.update(
        op="sampler_overhead", backend=backend, noise=noise, shape=list(LATENTS), plan=str(DEFAULT_PLAN),
        num_steps=NUM_STEPS, nfe=stats.nfe, stub_ms=stub.cost_ms, refined_s=refined, bare_s=bare,
        overhead_per_nfe_ms=(refined - bare) / stats.nfe * 1e3, overhead_share=(refined - bare) / refined,
        timing="host wall time" + ("" if ON_GPU else " (CPU-only)"),
    )
