"""Wan2.1-1.3B-shaped transformer forward (random weights, bf16) per attention backend, eager and
compiled, in TFLOP/s (SPEC §6: the best exact backend next to diffusers' default, "native").

A backend runs when diffusers accepts it and its forward succeeds here; otherwise the case skips
with diffusers' or the kernel's reason. Hub backends are left out: they download kernels.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from bench.harness import DEVICE, ON_GPU, env_list, measure, median_seconds
from bench.wan_model import PROBLEMS, build_model, forward_flops, text_embeddings

# Exact attention backends that need no download; "native" is diffusers' default (torch SDPA).
BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math", "flash", "_flash_3", "xformers")
# Math attention materialises the (L x L) score matrix: 12 heads x 32760^2 x 2 bytes = 26 GB at 480p.
MATH_MAX_TOKENS = 4096


# Every problem of one size uses the same model configuration.
@pytest.fixture(scope="module")
def eager_model():
    return build_model(next(iter(PROBLEMS.values())).config, DEVICE)


@pytest.fixture(scope="module")
def compiled_model():
    model = build_model(next(iter(PROBLEMS.values())).config, DEVICE)
    model.compile_repeated_blocks()  # one compiled block reused by all 30: far shorter compile
    return model


def _skip_unless_compiled_case(backend: str) -> None:
    if not ON_GPU:
        pytest.skip("torch.compile of the transformer on CPU takes minutes: GPU only")
    wanted = env_list("PNP_BENCH_COMPILED_ATTENTION", "native")
    if backend not in wanted and wanted != ["all"]:
        pytest.skip(f"compiled forward only for attention backends {wanted} (set PNP_BENCH_COMPILED_ATTENTION)")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("problem_name", list(PROBLEMS))
def test_transformer_forward(benchmark, request, problem_name, backend, compiled):
    from diffusers.models.attention_dispatch import attention_backend

    problem = PROBLEMS[problem_name]
    flops = forward_flops(problem)
    if backend == "_native_math" and flops["tokens"] > MATH_MAX_TOKENS:
        pytest.skip(f"math attention would materialise {flops['tokens']}^2 scores per head")
    if compiled:
        _skip_unless_compiled_case(backend)
    model = request.getfixturevalue("compiled_model" if compiled else "eager_model")
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
            forward()
    except (RuntimeError, ValueError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        backend_scope.close()
        pytest.skip(f"attention backend {backend!r} cannot run here: {str(error).splitlines()[0][:300]}")
    with backend_scope, torch.inference_mode():
        benchmark.group = f"transformer {problem_name}"
        measure(benchmark, forward, rounds=1, rep_ms=2000.0, min_reps=3, max_reps=20)
    benchmark.extra_info.update(
        op="transformer_forward", problem=problem_name, backend=backend, compiled=compiled,
        shape=list(problem.latents), text_len=problem.text_len, flops=flops["total"],
        linear_flops=flops["linear"], attention_flops=flops["attention"], tokens=flops["tokens"],
    )
    seconds = median_seconds(benchmark)
    if seconds:
        benchmark.extra_info["tflops"] = flops["total"] / seconds / 1e12
