"""``pnp-info`` / ``python -m pnp_kernels.info``: the environment and every pnp_update backend.

``environment()`` is the one description of the machine that every record carries (the ``pnp-sample``
sidecar, benchmark results, bug reports). ``pnp-info`` adds, for each device type present (CPU, and
CUDA when available), every backend as usable or with the reasons it is not, and which one
backend="auto" picks.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
from typing import NamedTuple, Sequence

import torch

from . import __version__
from .first_choice import first_without_reasons
from .ops.backends import OP_BACKEND_PRIORITY, auto_reasons, explicit_reasons

PACKAGES = ("triton", "diffusers", "transformers", "accelerate")


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed (nothing is imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _gpus() -> list[str]:
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(f"cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
                    f"{props.total_memory / 2**30:.1f} GiB")
    return gpus


def environment() -> dict:
    """Versions, devices, settings and the date as a plain JSON-ready dict."""
    gpu = torch.cuda.is_available()
    found = {
        "pnp_kernels": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        **{name: package_version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,  # None on a CPU or ROCm build of torch
        "hip": torch.version.hip,
        "gpu": gpu,
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.processor() or platform.machine()})",
        "gpus": _gpus() if gpu else [],
        "driver": _driver_version() if gpu else None,
        "cpu_count": os.cpu_count(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("PNP_KERNELS_")},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if gpu:
        props = torch.cuda.get_device_properties(0)
        found["capability"] = f"{props.major}.{props.minor}"
        found["multiprocessors"] = props.multi_processor_count
        found["memory_gib"] = round(props.total_memory / 2**30, 1)
        found["l2_mib"] = round(props.L2_cache_size / 2**20, 1)
    return found


class BackendReport(NamedTuple):
    reasons: dict[str, list[str]]  # per backend, why an explicit request would fail ([] = it can run)
    chosen: str | None  # what backend="auto" picks


def backend_reasons(device: str, velocity_dtype: str | torch.dtype = torch.bfloat16, channels: int = 16) -> BackendReport:
    """Which backends can update Wan-like latents on ``device``: float32 latents with ``channels``
    channels and velocities in ``velocity_dtype`` (the model's dtype), as a Wan sampler passes them."""
    dtype = getattr(torch, velocity_dtype) if isinstance(velocity_dtype, str) else velocity_dtype
    z = torch.zeros((1, channels, 1, 2, 2), dtype=torch.float32, device=device)
    v = torch.zeros_like(z, dtype=dtype)
    reasons = {name: explicit_reasons(name, z, v) for name in OP_BACKEND_PRIORITY}
    chosen, _ = first_without_reasons(OP_BACKEND_PRIORITY, lambda name: auto_reasons(name, z, v))
    return BackendReport(reasons, chosen)


def collect_info() -> dict:
    """``environment()`` and, per device type present, every backend's availability."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {**environment(), "backends": {device: backend_reasons(device) for device in devices}}


def format_info(info: dict) -> str:
    build = f"ROCm {info['hip']}" if info["hip"] else (info["cuda"] or "none (CPU build)")
    lines = [
        f"pnp_kernels {info['pnp_kernels']}",
        f"python      {info['python']} ({info['platform']})",
        f"torch       {info['torch']} (CUDA build: {build}, CUDA available: {info['gpu']})",
        f"triton      {info['triton'] or 'not installed'} (TRITON_INTERPRET={int(info['triton_interpret'])})",
        f"diffusers   {info['diffusers'] or 'not installed'}, transformers {info['transformers'] or 'not installed'}",
    ]
    lines += [f"gpu         {gpu}" for gpu in info["gpus"]] or ["gpu         none"]
    if info["driver"]:
        lines.append(f"driver      {info['driver']}")
    lines += [f"env         {k}={v}" for k, v in info["settings"].items()]
    for device, (reasons, chosen) in info["backends"].items():
        lines.append(f"backends for {device} tensors (auto priority {', '.join(OP_BACKEND_PRIORITY)}):")
        for name, why in reasons.items():
            status = "available" if not why else "unavailable: " + "; ".join(why)
            lines.append(f"  {name:<7} {status}")
        lines.append(f"  auto -> {chosen if chosen is not None else 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pnp-info``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="pnp-info", description="The environment and every pnp_update backend: "
                                     "usable here, or the reasons it is not, and which one backend='auto' picks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")  # as pnp-sample's
    parser.parse_args(argv)
    print(format_info(collect_info()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
