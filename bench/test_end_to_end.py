"""End to end on the Wan2.1-1.3B-shaped transformer at 480p / 81 frames (random weights, bf16, no VAE
decode): the baseline plan (plain Euler) against the published plan, ROUNDS runs each, with the
transformer eager and then with its repeated blocks compiled (regional compilation, as the Wan
pipelines' compile=True does). Targets (docs/PERFORMANCE.md): a refined run's wall time at most its
NFE ratio x 1.02 of the baseline's; the sampler's work outside the model under 0.5% of a refined run.

The runs are unguided, one forward per model call: the sampler's share of a run is then about twice what
it is with classifier-free guidance, so both targets are tested where they are hardest to meet.
Batched against sequential guidance is compared on a few plain steps at the end.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from bench.harness import (DEVICE, ON_GPU, bench_size, compile_backend, env_int, flow_sigmas, skip_unless_time_for,
                           synchronize)
from bench.wan_model import PROBLEMS, build_model, guided_denoiser, plain_denoiser, text_embeddings
from pnp_kernels import DEFAULT_PLAN, Guided, PnPConfig, RefinePlan, pnp_sample

pytest.importorskip("diffusers", reason="the Wan transformer comes from diffusers (bench/fetch_wheels.sh carries it)")

PROBLEM = next(iter(PROBLEMS.values()))  # 480p, 81 frames (or the tiny problem on CPU)
PLANS = {"baseline": RefinePlan(()), "published": DEFAULT_PLAN}
# The published plan is for 50 steps; 15 is the fewest it fits (the GPU suite's setting, to fit its time).
NUM_STEPS = env_int("PNP_BENCH_E2E_STEPS", 50 if bench_size() == "full" else 15)
ROUNDS = env_int("PNP_BENCH_E2E_ROUNDS", 3)
# Eager first: the pipelines' default today. Within each, the baseline first.
CASES = [(False, "baseline"), (False, "published"), (True, "baseline"), (True, "published")]
GUIDANCE_STEPS = 3
GUIDANCE = 5.0


def _timed_model(compiled: bool) -> dict:
    """The model, one forward's time measured on it, and (compiled) how long the first, compiling forward took."""
    model = build_model(PROBLEM.config, DEVICE)
    latents = torch.randn(PROBLEM.latents, device=DEVICE).to(model.dtype)
    t = torch.full((PROBLEM.latents[0],), 900.0, device=DEVICE)
    text = text_embeddings(PROBLEM, PROBLEM.latents[0], DEVICE)
    if compiled:
        model.compile_repeated_blocks(fullgraph=True, backend=compile_backend())
    times = []
    with torch.inference_mode():
        for _ in range(2):  # the first forward loads kernels (and compiles): its time is compile_s
            started = time.perf_counter()
            model(latents, t, text, return_dict=False)
            synchronize()
            times.append(time.perf_counter() - started)
    return {"model": model, "forward_s": times[1], "first_forward_s": times[0]}


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(compiled: bool) -> dict:
        if compiled not in built:
            built[compiled] = _timed_model(compiled)
        return built[compiled]

    return get


@pytest.fixture(scope="module")
def texts():
    return text_embeddings(PROBLEM, 1, DEVICE, seed=1), text_embeddings(PROBLEM, 1, DEVICE, seed=2)


@pytest.fixture(scope="module")
def warm_updates():
    """One sampler run on a stub model, so the update kernels it launches are compiled before any timing."""
    latents = torch.randn(PROBLEM.latents, device=DEVICE)
    velocity = torch.randn(PROBLEM.latents, device=DEVICE).bfloat16()
    for denoise in (lambda z, step, sigma: velocity, lambda z, step, sigma: Guided(velocity, velocity, GUIDANCE)):
        pnp_sample(denoise, latents, flow_sigmas(NUM_STEPS), PnPConfig(plan=DEFAULT_PLAN),
                   generator=torch.Generator(device=DEVICE).manual_seed(0))
    synchronize()


def _rounds(benchmark, denoise, num_steps: int, plan: RefinePlan, rounds: int) -> list:
    """``rounds`` pnp_sample runs from the same noise, timed by pytest-benchmark (host wall time, synced)."""
    latents = torch.randn(PROBLEM.latents, generator=torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE)
    runs = []

    def run():
        with torch.inference_mode():
            runs.append(pnp_sample(denoise, latents, flow_sigmas(num_steps), PnPConfig(plan=plan),
                                   generator=torch.Generator(device=DEVICE).manual_seed(1)).stats)
        synchronize()

    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0)
    return runs


def _timing_label() -> str:
    return "host wall time" + ("" if ON_GPU else " (CPU-only)")


@pytest.mark.parametrize("compiled, plan_name", CASES, ids=[f"{'compiled' if c else 'eager'}-{p}" for c, p in CASES])
def test_plan_wall_time(benchmark, models, texts, warm_updates, compiled, plan_name):
    plan = PLANS[plan_name]
    nfe = NUM_STEPS + plan.extra_nfe(NUM_STEPS)
    timed = models(compiled)
    skip_unless_time_for(ROUNDS * nfe * timed["forward_s"], f"{ROUNDS} runs of {nfe} forwards")
    benchmark.group = f"end to end {PROBLEM.name}"
    runs = _rounds(benchmark, plain_denoiser(timed["model"], texts[0]), NUM_STEPS, plan, ROUNDS)
    benchmark.extra_info.update(
        op="end_to_end", plan_name=plan_name, plan=str(plan), problem=PROBLEM.name, compiled=compiled,
        shape=list(PROBLEM.latents), num_steps=NUM_STEPS, rounds=ROUNDS, nfe=runs[-1].nfe, backend=runs[-1].backend,
        wall_s=[r.time_total for r in runs], model_s=[r.time_model for r in runs],
        outside_model_share=statistics.median(r.time_outside_model / r.time_total for r in runs),
        forward_s=timed["forward_s"], first_forward_s=timed["first_forward_s"], timing=_timing_label(),
    )


@pytest.mark.parametrize("guidance", ["batched", "sequential"])
def test_guidance_mode(benchmark, models, texts, warm_updates, guidance):
    timed = models(False)
    # Either way a step costs about two batch-1 forwards (one batch-2 forward, or two batch-1 forwards).
    skip_unless_time_for(GUIDANCE_STEPS * 2 * timed["forward_s"], f"{GUIDANCE_STEPS} guided steps")
    denoise = guided_denoiser(timed["model"], *texts, GUIDANCE, batched=guidance == "batched")
    benchmark.group = f"guidance {PROBLEM.name}"
    runs = _rounds(benchmark, denoise, GUIDANCE_STEPS, RefinePlan(()), 1)
    benchmark.extra_info.update(
        op="guidance_mode", guidance=guidance, problem=PROBLEM.name, shape=list(PROBLEM.latents),
        num_steps=GUIDANCE_STEPS, nfe=runs[-1].nfe, wall_s=runs[-1].time_total,
        per_nfe_s=runs[-1].time_total / runs[-1].nfe, timing=_timing_label(),
    )
