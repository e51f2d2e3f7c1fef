"""What every benchmark file shares: device and problem size, GPU timing, backend checks, environment.

GPU figures are device time from CUDA events (median and quantiles over many launches, L2 flushed
before each launch); pytest-benchmark's own host timing is kept next to them. CPU figures are
pytest-benchmark's host timing and are labelled CPU-only by the report.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from typing import Callable

import pytest
import torch

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
SIZES = ("tiny", "full")
_L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2 (H100 50 MB, H200 60 MB)
_flush_buffer: torch.Tensor | None = None


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


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def flow_sigmas(num_steps: int, shift: float = 3.0) -> list[float]:
    """Wan's shifted flow-matching sigma grid (shift 3 at 480p), last value 0; values do not affect cost."""
    grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * grid / (1 + (shift - 1) * grid)).tolist()


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def device_time(fn: Callable[[], object], *, rep_ms: float = 200.0, min_reps: int = 5, max_reps: int = 500) -> dict:
    """Device time of ``fn`` in milliseconds (CUDA events around each call; median and quantiles).

    Before each call the L2 cache is flushed, so inputs come from device memory as they would in a
    sampling loop. A spin kernel first lets the host queue several calls ahead, so host-side Python
    time is hidden wherever the device is the bottleneck (as in real use) and counted where it is not.
    """
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(_L2_FLUSH_BYTES, dtype=torch.int8, device=DEVICE)
    fn()  # compile, autotune, allocate, load modules: none of it belongs in the figure
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end), 1e-3)
    reps = int(min(max(rep_ms / estimate_ms, min_reps), max_reps))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda._sleep(2_000_000)  # about a millisecond of device time for the host to run ahead
    for begin, finish in zip(starts, ends):
        _flush_buffer.zero_()
        begin.record()
        fn()
        finish.record()
    torch.cuda.synchronize()
    times = sorted(b.elapsed_time(f) for b, f in zip(starts, ends))
    deciles = statistics.quantiles(times, n=10) if reps >= 2 else [times[0]] * 9
    return {
        "median_ms": statistics.median(times), "q20_ms": deciles[1], "q80_ms": deciles[7],
        "min_ms": times[0], "reps": reps,
    }


def measure(benchmark, fn: Callable[[], object], *, rounds: int | None = None, **device_kwargs) -> None:
    """Time ``fn`` with pytest-benchmark and, on a GPU, with CUDA events into ``extra_info["device_time"]``.

    rounds=None lets pytest-benchmark calibrate (cheap calls); an integer fixes the rounds (long calls).
    With --benchmark-disable, ``fn`` runs once and nothing is timed.
    """
    def synced():
        fn()
        synchronize()

    if ON_GPU and not benchmark.disabled:
        benchmark.extra_info["device_time"] = device_time(fn, **device_kwargs)
        # Host wall time with a sync per call: context for the event figure, not the figure itself.
        benchmark.pedantic(synced, rounds=rounds or 3, warmup_rounds=0)
    elif rounds is None:
        benchmark(synced)
    else:
        benchmark.pedantic(synced, rounds=rounds, warmup_rounds=1 if rounds > 1 else 0)
    benchmark.extra_info["timing"] = "cuda-events" if ON_GPU else "host (CPU-only)"


def median_seconds(benchmark) -> float | None:
    """The figure a benchmark stands for: device-event median on a GPU, host median otherwise."""
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


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def environment() -> dict:
    """Device, driver and library versions and the date, saved with every result file."""
    info = {
        "device": torch.cuda.get_device_name(0) if ON_GPU else f"CPU ({platform.processor() or platform.machine()})",
        "gpu": ON_GPU,
        "driver": _driver_version() if ON_GPU else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": _package_version("triton"),
        "diffusers": _package_version("diffusers"),
        "pnp_kernels": _package_version("pnp-kernels"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "size": bench_size(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if ON_GPU:
        props = torch.cuda.get_device_properties(0)
        info["multiprocessors"] = props.multi_processor_count
        info["memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
