"""``pnp-info`` / ``python -m pnp_kernels.info``: the environment and every pnp_update backend.

For each device type present (CPU, and CUDA when available) it lists every backend as usable or
with the reasons it is not, and which one backend="auto" picks, so a bug report says it all.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys

import torch

from . import __version__
from .ops.backends import AUTO_PRIORITY, BACKENDS, auto_reasons


def _triton_version() -> str:
    if importlib.util.find_spec("triton") is None:
        return "not installed"
    try:
        import triton
    except ImportError as error:
        return f"installed but failed to import: {error}"
    return triton.__version__


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            f"cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB"
        )
    return gpus


def _backend_report(device: str) -> tuple[dict[str, list[str]], str | None]:
    """Reasons per backend (explicit request) for Wan-like probe inputs on ``device``, and auto's pick."""
    # C=16 float32 latents with bfloat16 velocities, as a Wan 2.1 sampler passes them.
    z = torch.zeros((1, 16, 1, 2, 2), dtype=torch.float32, device=device)
    v = torch.zeros_like(z, dtype=torch.bfloat16)
    reasons = {name: BACKENDS[name].not_supported_reasons(z, v, None) for name in AUTO_PRIORITY}
    chosen = next((name for name in AUTO_PRIORITY if not auto_reasons(name, z, v, None)), None)
    return reasons, chosen


def collect_info() -> dict:
    """Versions, devices and backend availability as a plain dict."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {
        "pnp_kernels": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": (torch.version.cuda or "none (CPU build)") if torch.version.hip is None else f"ROCm {torch.version.hip}",
        "cuda_available": torch.cuda.is_available(),
        "gpus": _gpus(),
        "triton": _triton_version(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "unset"),
        "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("PNP_KERNELS_")},
        "backends": {device: _backend_report(device) for device in devices},
    }


def format_info(info: dict) -> str:
    lines = [
        f"pnp_kernels {info['pnp_kernels']}",
        f"python      {info['python']} ({info['platform']})",
        f"torch       {info['torch']} (CUDA build: {info['torch_cuda']}, CUDA available: {info['cuda_available']})",
        f"triton      {info['triton']} (TRITON_INTERPRET={info['TRITON_INTERPRET']})",
    ]
    lines += [f"gpu         {gpu}" for gpu in info["gpus"]] or ["gpu         none"]
    lines += [f"env         {k}={v}" for k, v in info["settings"].items()]
    for device, (reasons, chosen) in info["backends"].items():
        lines.append(f"backends for {device} tensors (auto priority {', '.join(AUTO_PRIORITY)}):")
        for name, why in reasons.items():
            status = "available" if not why else "unavailable: " + "; ".join(why)
            lines.append(f"  {name:<7} {status}")
        lines.append(f"  auto -> {chosen if chosen is not None else 'none'}")
    return "\n".join(lines)


def main() -> int:
    print(format_info(collect_info()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
