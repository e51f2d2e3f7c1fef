"""Build (or load from the cache) the CUDA extension for this machine's GPU only, and say how it went.

    TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/ext python -m bench.build_cuda

bench/suite.py runs this as its own stage, with the architecture of the device (``device_arch``), so
that the compile never lands inside a timed or tested stage: later stages load the cached build. Exit
status 0 when the extension loads (or there is no GPU to build for), 1 when it cannot be built.
"""
from __future__ import annotations

import os
import sys
import time

import torch


def device_arch() -> str:
    """TORCH_CUDA_ARCH_LIST for GPU 0 alone, e.g. "9.0" on an H100/H200 (one target: a fraction of the
    compile time of the installer's default list)."""
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def main() -> int:
    if not torch.cuda.is_available():
        print("build_cuda: no CUDA device, nothing to build (the CUDA backend reports itself unavailable)")
        return 0
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", device_arch())
    print(f"build_cuda: TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}, "
          f"TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR', '(default)')}", flush=True)
    from pnp_kernels.ops import cuda_backend

    started = time.perf_counter()
    error = cuda_backend.extension_error()
    took = time.perf_counter() - started
    if error is not None:
        print(f"build_cuda: the CUDA extension is unavailable after {took:.0f} s: {error}")
        return 1
    print(f"build_cuda: the CUDA extension is loaded ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
