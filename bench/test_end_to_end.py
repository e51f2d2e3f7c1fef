"""End to end on the Wan2.1-1.3B-shaped transformer (no VAE decode): the baseline plan (plain Euler)
vs the published default plan, wall time next to NFE (SPEC §6: refined <= NFE ratio x 1.02 of
baseline; sampler work outside the model < 0.5% of the refined run); batched vs sequential guidance.
"""
from __future__ import annotations

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, bench_size, env_int, flow_sigmas, synchronize
from bench.wan_model import PROBLEMS, build_model, guided_denoiser, text_embeddings
from pnp_kernels import DEFAULT_PLAN, PnPConfig, RefinePlan, pnp_sample

PROBLEM = next(iter(PROBLEMS.values()))  # 480p, 81 frames (or the tiny problem on CPU)
PLANS = {"baseline": RefinePlan(()), "default": DEFAULT_PLAN}
# The published default plan is for 50 steps; the tiny CPU run keeps just enough steps for it.
NUM_STEPS = env_int("PNP_BENCH_E2E_STEPS", 50 if bench_size() == "full" else 16)
# Guidance modes cost the same per NFE along a run: a few plain steps compare them.
GUIDANCE_STEPS = 3
GUIDANCE = 5.0


@pytest.fixture(scope="module")
def model():
    return build_model(PROBLEM.config, DEVICE)


@pytest.fixture(scope="module")
def texts():
    return text_embeddings(PROBLEM, 1, DEVICE, seed=1), text_embeddings(PROBLEM, 1, DEVICE, seed=2)


def _timed_sample(benchmark, denoise, num_steps: int, plan: RefinePlan):
    """One pnp_sample run timed by pytest-benchmark (host wall time, synced); returns its stats."""
    latents = torch.randn(PROBLEM.latents, generator=torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE)
    config = PnPConfig(plan=plan)
    runs = []

    def run():
        with torch.inference_mode():
            runs.append(pnp_sample(denoise, latents, flow_sigmas(num_steps), config, generator=torch.Generator(device=DEVICE).manual_seed(1)))
        synchronize()

    with torch.inference_mode():
        denoise(latents, 0, 1.0)  # library handles, kernels and caches, outside the timed run
    synchronize()
    benchmark.pedantic(run, rounds=1 if ON_GPU else 2, warmup_rounds=0)
    return runs[-1].stats


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_plan_wall_time(benchmark, model, texts, plan_name):
    denoise = guided_denoiser(model, *texts, GUIDANCE, batched=True)
    benchmark.group = f"end to end {PROBLEM.name}"
    stats = _timed_sample(benchmark, denoise, NUM_STEPS, PLANS[plan_name])
    benchmark.extra_info.update(
        op="end_to_end", plan_name=plan_name, plan=str(PLANS[plan_name]), problem=PROBLEM.name,
        shape=list(PROBLEM.latents), num_steps=NUM_STEPS, nfe=stats.nfe, backend=stats.backend,
        wall_s=stats.time_total, model_s=stats.time_model,
        outside_model_share=stats.time_outside_model / stats.time_total,
        timing="host wall time" + ("" if ON_GPU else " (CPU-only)"),
    )


@pytest.mark.parametrize("guidance", ["batched", "sequential"])
def test_guidance_mode(benchmark, model, texts, guidance):
    denoise = guided_denoiser(model, *texts, GUIDANCE, batched=guidance == "batched")
    benchmark.group = f"guidance {PROBLEM.name}"
    stats = _timed_sample(benchmark, denoise, GUIDANCE_STEPS, RefinePlan(()))
    benchmark.extra_info.update(
        op="guidance_mode", guidance=guidance, problem=PROBLEM.name, shape=list(PROBLEM.latents),
        num_steps=GUIDANCE_STEPS, nfe=stats.nfe, wall_s=stats.time_total,
        per_nfe_s=stats.time_total / stats.nfe, timing="host wall time" + ("" if ON_GPU else " (CPU-only)"),
    )
