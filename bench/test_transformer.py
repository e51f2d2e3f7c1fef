"""Wan2.1-1.3B-shaped transformer forward (random weights, bf16) per attention backend, in TFLOP/s:
the best exact backend next to diffusers' default ("native"), and "native" with the repeated blocks
compiled (regional compilation, as the Wan pipelines' compile=True does) against eager.

A backend runs when diffusers accepts it and its forward succeeds here; otherwise the case skips
with diffusers' or the kernel's reason. Hub backends are left out: they download kernels. 480p runs
first; a 720p case runs only when this run's 480p time of the same backend says it fits the time left.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, compile_backend, event_time, host_rounds, median_seconds, skip_unless_time_for
from bench.wan_model import PROBLEMS, build_model, forward_flops, text_embeddings

pytest.importorskip("diffusers", reason="the Wan transformer comes from diffusers (bench/fetch_wheels.sh carries it)")

# Exact attention backends that need no download; "native" is diffusers' default (torch SDPA).
BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math", "flash", "_flash_3", "xformers")
# Math attention materialises the (L x L) score matrix: 12 heads x 32760^2 x 2 bytes = 26 GB at 480p.
MATH_MAX_TOKENS = 4096
REPS = 3  # timed forwards after a warm-up one: a forward is long, its spread small
# Per problem (480p first): every backend eager, then the default backend with compiled blocks.
CASES = [case for problem in PROBLEMS for case in
         [(problem, backend, False) for backend in BACKENDS] + [(problem, "native", True)]]
_seconds_per_flop: dict[tuple[str, bool], float] = {}  # (backend, compiled) -> measured at the first problem


@pytest.fixture(scope="module")
def models():
    """The eager model, and on request the same weights' model with its repeated blocks compiled."""
    built = {}

    def get(compiled: bool):
        if compiled not in built:
            model = build_model(next(iter(PROBLEMS.values())).config, DEVICE)
            if compiled:
                model.compile_repeated_blocks(fullgraph=True, backend=compile_backend())
            built[compiled] = model
        return built[compiled]

    return get


@pytest.mark.parametrize("problem_name, backend, compiled", CASES,
                         ids=[f"{p}-{b}-{'compiled' if c else 'eager'}" for p, b, c in CASES])
def test_transformer_forward(benchmark, models, problem_name, backend, compiled):
    from diffusers.models.attention_dispatch import attention_backend

    problem = PROBLEMS[problem_name]
    flops = forward_flops(problem)
    if backend == "_native_math" and flops["tokens"] > MATH_MAX_TOKENS:
        pytest.skip(f"math attention would materialise {flops['tokens']}^2 scores per head")
    if (backend, compiled) in _seconds_per_flop:  # a later problem: does it fit the time left?
        skip_unless_time_for((REPS + 2) * flops["total"] * _seconds_per_flop[(backend, compiled)],
                             f"{problem_name} {backend} ({REPS + 2} forwards)")
    model = models(compiled)
    g = torch.Generator(device=DEVICE).manual_seed(5)
    latents = torch.randn(problem.latents, generator=g, device=DEVICE).to(model.dtype)
    timestep = torch.full((problem.latents[0],), 900.0, device=DEVICE)
    text = text_embeddings(problem, problem.latents[0], DEVICE)

    def forward():
        return model(latents, timestep, text, return_dict=False)[0]

    backend_scope = contextlib.ExitStack()
    try:  # a backend that cannot run here fails now, with its own reason (missing package, no kernel, OOM)
        backend_scope.enter_context(attention_backend(backend))
        with torch.inference_mode():
            forward()  # compiles, when compiled
    except (RuntimeError, ValueError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        backend_scope.close()
        pytest.skip(f"attention backend {backend!r} cannot run here: {str(error).splitlines()[0][:300]}")
    with backend_scope, torch.inference_mode():
        benchmark.group = f"transformer {problem_name}"
        if ON_GPU and not benchmark.disabled:
            benchmark.extra_info["device_time"] = event_time(forward, REPS)
        host_rounds(benchmark, forward, rounds=1)
    benchmark.extra_info.update(
        op="transformer_forward", problem=problem_name, backend=backend, compiled=compiled,
        shape=list(problem.latents), text_len=problem.text_len, flops=flops["total"],
        linear_flops=flops["linear"], attention_flops=flops["attention"], tokens=flops["tokens"],
    )
    seconds = median_seconds(benchmark)
    if seconds:
        benchmark.extra_info["tflops"] = flops["total"] / seconds / 1e12
        _seconds_per_flop.setdefault((backend, compiled), seconds / flops["total"])
