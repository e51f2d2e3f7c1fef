"""The CUDA C++ backend of the fused update: loads ``csrc/`` and calls ``pnp_kernels::pnp_update_cuda``.

Loading order, on the first CUDA call only (importing this module does nothing): the prebuilt
extension ``pnp_kernels._C`` from ``setup.py``; otherwise a JIT build of ``csrc/`` with
``torch.utils.cpp_extension`` and ninja, cached in ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/pnp_kernels`` (``PNP_KERNELS_NO_JIT=1`` turns the JIT build off). A failed load is
remembered and its reason logged once; it is then the reason this backend refuses to run.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

import torch

from .inputs import PnPUpdateInputs, contiguous_or_none, kernel_limit_reasons
from .outputs import TENSOR_FIELDS, PnPUpdateOutput, contiguous_buffers, copy_back

logger = logging.getLogger("pnp_kernels")

# The kernel's limits; tests/ops check that they equal csrc/pnp_update_params.h.
MAX_CHANNELS = 64  # kMaxChannels
MAX_BATCH = 65535  # kMaxBatch: the sample is the second grid axis
# One translation unit per velocity dtype (compiled in parallel), the binding, and their headers.
CSRC_SOURCES = ("pnp_update_fp32.cu", "pnp_update_fp16.cu", "pnp_update_bf16.cu", "pnp_update_op.cpp")
CSRC_FILES = CSRC_SOURCES + ("pnp_update_kernel.cuh", "pnp_update_params.h", "philox.cuh", "static_switch.h")
NO_JIT_ENV = "PNP_KERNELS_NO_JIT"


def csrc_dir() -> Path | None:
    """Where the CUDA sources are: inside the package (wheel) or at the repository root (editable)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "csrc", package.parent / "csrc"):
        if all((candidate / name).is_file() for name in CSRC_FILES):
            return candidate
    return None


def _op_registered() -> bool:
    return hasattr(torch.ops.pnp_kernels, "pnp_update_cuda")


def _load_prebuilt() -> str | None:
    """Load ``pnp_kernels._C`` if it was built; returns why not, or None when loaded."""
    spec = importlib.util.find_spec("pnp_kernels._C")
    if spec is None or spec.origin is None:
        return "the prebuilt extension pnp_kernels._C is not installed"
    try:
        torch.ops.load_library(spec.origin)  # a plain op library: no Python module to import
    except OSError as error:
        return f"pnp_kernels._C at {spec.origin} failed to load: {error}"
    return None


def _jit_build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "pnp_kernels"
    # One directory per torch / CUDA pair: an extension built for another torch would not load.
    return Path(root) / f"pnp_kernels_cuda_torch{torch.__version__}_cu{torch.version.cuda}".replace("+", "_")


def _jit_build() -> str | None:
    """Compile ``csrc/`` with ninja (cached) and load it; returns why not, or None when loaded."""
    from torch.utils import cpp_extension

    if os.environ.get(NO_JIT_ENV, "") not in ("", "0"):
        return f"JIT compilation is disabled ({NO_JIT_ENV}={os.environ[NO_JIT_ENV]})"
    sources = csrc_dir()
    if sources is None:
        return f"the CUDA sources ({', '.join(CSRC_FILES)}) are not shipped with this installation"
    if not cpp_extension.is_ninja_available():
        return "JIT compilation needs ninja (pip install ninja)"
    if cpp_extension.CUDA_HOME is None:
        return "JIT compilation needs the CUDA toolkit (nvcc); set CUDA_HOME"
    build_dir = _jit_build_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("pnp_kernels: compiling the CUDA extension (first use; cached in %s)", build_dir)
    try:
        cpp_extension.load(
            name="pnp_kernels_cuda",
            sources=[str(sources / name) for name in CSRC_SOURCES],
            extra_include_paths=[str(sources)],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
            build_directory=str(build_dir),
            is_python_module=False,
        )
    except (RuntimeError, OSError, ImportError) as error:
        return f"JIT compilation of {sources} failed: {error}"
    return None


@functools.cache
def extension_error() -> str | None:
    """Why the CUDA extension cannot be used, or None once its op is registered. Tried once."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    reasons = []
    for attempt in (_load_prebuilt, _jit_build):
        if _op_registered():
            return None
        reason = attempt()
        if reason is not None:
            reasons.append(reason)
    if _op_registered():
        return None
    reason = "; ".join(reasons) or "the extension loaded but did not register pnp_kernels::pnp_update_cuda"
    logger.warning("pnp_kernels: the CUDA backend is unavailable: %s", reason)
    return reason


def cuda_op_arguments(inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> tuple:
    """The arguments of ``pnp_kernels::pnp_update_cuda`` for ``inputs`` written into ``outputs``.

    They are those of the Python op ``pnp_kernels::pnp_update`` (``custom_op.py``), in its order,
    with two differences: philox noise comes as the (B, 2) int64 device tensor of
    ``PhiloxNoise.key_table`` (cached per device, so no copy per call) in place of the key words as
    integers, and ``round_products_to`` / ``backend`` are left out (this op is one backend and never
    rounds products). Tensors come dense, as the kernel indexes them; two velocities of different
    dtypes come as float32, as the kernel reads one velocity dtype.
    """
    v, v_uncond = inputs.v, inputs.v_uncond
    if v_uncond is not None and v_uncond.dtype != v.dtype:
        v, v_uncond = v.float(), v_uncond.float()
    philox, noise = inputs.philox, inputs.noise_tensor
    return (
        contiguous_or_none(inputs.z), contiguous_or_none(v), contiguous_or_none(v_uncond),
        contiguous_or_none(inputs.prev_x0), contiguous_or_none(inputs.prev_z_next),
        contiguous_or_none(inputs.prev_certain), contiguous_or_none(inputs.active),
        None if noise is None else contiguous_or_none(noise.to(torch.float32)),
        None if philox is None else philox.key_table(inputs.z.device),
        0 if philox is None else philox.step, 0 if philox is None else philox.iteration,
        inputs.sigma, inputs.sigma_next, inputs.guidance_scale, inputs.tau, inputs.p_norm, inputs.num_pinned_frames,
        *outputs[: len(TENSOR_FIELDS)],
    )


class CudaBackend:
    """The CUDA C++ kernel of ``csrc/``: four positions per thread, their channels in registers."""

    name = "cuda"
    auto_devices = None

    def not_supported_reasons(self, inputs: PnPUpdateInputs) -> list[str]:
        z = inputs.z
        reasons = [] if z.is_cuda else [f"z is on {z.device}, not a CUDA device"]
        reasons += kernel_limit_reasons(inputs, MAX_CHANNELS, MAX_BATCH)
        if not reasons:  # only a CUDA call may load or compile the extension
            error = extension_error()
            if error is not None:
                reasons.append(error)
        return reasons

    def run(self, inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
        error = extension_error()
        if error is not None:
            raise RuntimeError(f"backend 'cuda' cannot run: {error}")
        written = contiguous_buffers(outputs)
        torch.ops.pnp_kernels.pnp_update_cuda(*cuda_op_arguments(inputs, written))
        copy_back(written, outputs)
