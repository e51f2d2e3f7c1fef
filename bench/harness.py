"""What every benchmark file shares: device and problem size, GPU timing, the suite's deadline, backend
checks, the environment saved with every result.

GPU figures are device time: CUDA-graph replays for the fused update (no host work in the figure),
CUDA events around each call for the transformer; median and quantiles. pytest-benchmark's own host
timing is kept next to them. CPU figures are pytest-benchmark's host timing, labelled CPU-only.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable, Sequence

import pytest
import torch

import pnp_kernels.info

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
SIZES = ("tiny", "full")
DEADLINE_ENV = "PNP_SUITE_DEADLINE"  # set by bench/suite.py: Unix time at which the current stage is stopped
# Input sets a timed graph cycles through hold this many times the L2 cache, so that every call reads
# its inputs from device memory (a sampling loop never finds them in the cache).
ROTATION_L2_MULTIPLE = 4
MAX_ROTATION_SETS = 8


def bench_size() -> str:
    """``PNP_BENCH_SIZE``: "full" (Wan shapes, the default on a GPU) or "tiny" (the default on CPU)."""
    size = os.environ.get("PNP_BENCH_SIZE", "full" if ON_GPU else "tiny")
    if size not in SIZES:
        raise ValueError(f"PNP_BENCH_SIZE must be one of {SIZES}, got {size!r}")
    return size


def env_int(name: str, default: int) -> int:
    """A positive integer setting from the environment (used for run lengths that trade time for precision)."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return int(text)


def compile_backend() -> str:
    """torch.compile backend of the compiled cases: Inductor on a GPU; on CPU only Dynamo's tracing
    ("eager"), so that CPU runs go through the same code in seconds instead of minutes of codegen."""
    return "inductor" if ON_GPU else "eager"


def flow_sigmas(num_steps: int, shift: float = 3.0) -> list[float]:
    """Wan's shifted flow-matching sigma grid (shift 3 at 480p), last value 0; values do not affect cost."""
    grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * grid / (1 + (shift - 1) * grid)).tolist()


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def time_left() -> float | None:
    """Seconds before the suite stops the current stage, or None outside the suite."""
    deadline = os.environ.get(DEADLINE_ENV)
    return None if deadline is None else float(deadline) - time.time()


def skip_unless_time_for(seconds: float, what: str) -> None:
    """Skip, saying why, when ``what`` (estimated from this run's own measurements) would outlast the stage."""
    left = time_left()
    if left is not None and seconds > left:
        pytest.skip(f"{what} needs about {seconds:.0f} s by this run's measurements; the stage has {left:.0f} s left")


def _summary(times_ms: Sequence[float]) -> dict:
    times = sorted(times_ms)
    deciles = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "q20_ms": deciles[1], "q80_ms": deciles[7],
            "min_ms": times[0], "max_ms": times[-1], "reps": len(times)}


def rotation_sets(bytes_per_call: int) -> int:
    """How many input sets a timed graph cycles through (see ROTATION_L2_MULTIPLE)."""
    l2_bytes = torch.cuda.get_device_properties(DEVICE).L2_cache_size
    return max(2, min(MAX_ROTATION_SETS, math.ceil(ROTATION_L2_MULTIPLE * l2_bytes / bytes_per_call)))


def graph_replay_time(call: Callable[[object], object], input_sets: Sequence[object], *, rep_ms: float = 150.0,
                      min_replays: int = 10, max_replays: int = 200) -> dict:
    """Device time in ms of ``call(inputs)`` per call, from CUDA-graph replays; median and quantiles over replays.

    One graph calls ``call`` once per input set, in turn; each replay is timed with CUDA events and
    divided by the number of sets. In a replay the host launches nothing, so host-side Python (argument
    checks, dispatch, launch overhead) is out of the figure for every provider alike. Every call's
    outputs are kept, so every call writes memory of its own.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile, autotune, load modules, fill host-side caches
        for inputs in input_sets:
            call(inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = [call(inputs) for inputs in input_sets]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    replays = int(min(max(rep_ms / max(start.elapsed_time(end), 1e-3), min_replays), max_replays))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    for begin, finish in events:
        begin.record()
        graph.replay()
        finish.record()
    torch.cuda.synchronize()
    del outputs, graph
    stats = _summary([b.elapsed_time(f) / len(input_sets) for b, f in events])
    stats["calls_per_replay"] = len(input_sets)
    return stats


def event_time(fn: Callable[[], object], reps: int) -> dict:
    """Device time in ms of ``fn`` (long calls such as a transformer forward): CUDA events around each of
    ``reps`` calls after one warm-up call; median and quantiles."""
    fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for begin, finish in events:
        begin.record()
        fn()
        finish.record()
    torch.cuda.synchronize()
    return _summary([b.elapsed_time(f) for b, f in events])


def host_rounds(benchmark, fn: Callable[[], object], rounds: int | None = None) -> None:
    """pytest-benchmark's host timing of ``fn`` with a sync after each call: the figure on CPU, context on a
    GPU. rounds=None lets pytest-benchmark calibrate (cheap calls); with --benchmark-disable fn runs once."""
    def synced():
        fn()
        synchronize()

    if rounds is None:
        benchmark(synced)
    else:
        benchmark.pedantic(synced, rounds=rounds, warmup_rounds=1 if rounds > 1 and not ON_GPU else 0)
    benchmark.extra_info["timing"] = "device time" if ON_GPU else "host (CPU-only)"


def median_seconds(benchmark) -> float | None:
    """The figure a benchmark stands for: the device median on a GPU, the host median otherwise."""
    if "device_time" in benchmark.extra_info:
        return benchmark.extra_info["device_time"]["median_ms"] / 1e3
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


def skip_unless_backend_runs(name: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None) -> None:
    """Skip with the dispatcher's own reason when pnp_update backend ``name`` cannot run on these inputs."""
    from pnp_kernels.ops.backends import BACKENDS, select_backend

    if name not in BACKENDS:
        pytest.skip(f"backend {name!r} is not registered in this build (registered: {sorted(BACKENDS)})")
    try:
        select_backend(name, z, v, v_uncond)
    except RuntimeError as error:
        pytest.skip(str(error))


def environment() -> dict:
    """Device, driver and library versions and the date (pnp-info's record), plus the bench size."""
    return {**pnp_kernels.info.environment(), "size": bench_size()}
