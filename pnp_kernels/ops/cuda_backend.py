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

from .backends import write_outputs
from .philox import PhiloxNoise
from .reference import PnPUpdateOutput

logger = logging.getLogger("pnp_kernels")

MAX_CHANNELS = 64  # kMaxChannels in csrc/pnp_update_params.h
CSRC_FILES = ("pnp_update_kernel.cu", "pnp_update_op.cpp", "pnp_update_params.h")
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
            sources=[str(sources / "pnp_update_kernel.cu"), str(sources / "pnp_update_op.cpp")],
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


def _kernel_target(given, shape, dtype, device, taken: list) -> torch.Tensor:
    """``given`` when the kernel may write it directly, else a fresh tensor (``write_outputs`` then
    copies into ``given`` or reports its mismatch). The kernel reads through ``__restrict__``
    pointers, so a target must not share memory with any input or other target in ``taken``."""
    usable = (
        given is not None and tuple(given.shape) == tuple(shape) and given.dtype == dtype
        and given.device == device and given.is_contiguous()
        and all(t is None or t.untyped_storage().data_ptr() != given.untyped_storage().data_ptr() for t in taken)
    )
    chosen = given if usable else torch.empty(shape, dtype=dtype, device=device)
    taken.append(chosen)
    return chosen


class CudaBackend:
    """The CUDA C++ kernel of ``csrc/``: one thread per spatial position, channels in registers."""

    name = "cuda"

    def not_supported_reasons(self, z, v, v_uncond) -> list[str]:
        reasons = []
        if not z.is_cuda:
            reasons.append(f"z is on {z.device}, not a CUDA device")
        if z.dim() == 5 and z.shape[1] > MAX_CHANNELS:
            reasons.append(f"z has {z.shape[1]} channels, more than the {MAX_CHANNELS} one thread keeps in registers")
        if z.dim() == 5 and z.shape[0] > 65535:
            reasons.append(f"z has {z.shape[0]} samples, more than the 65535 of one launch")
        if not reasons:  # only a CUDA call may load or compile the extension
            error = extension_error()
            if error is not None:
                reasons.append(error)
        return reasons

    def run(
        self, z, v, sigma, sigma_next, *, v_uncond, guidance_scale, prev_x0, prev_z_next, prev_certain,
        tau, p_norm, noise, active, num_pinned_frames, return_uncertainty, store_state=True,
        round_products_to=None, out=None,
    ) -> PnPUpdateOutput:
        error = extension_error()
        if error is not None:
            raise RuntimeError(f"backend 'cuda' cannot run: {error}")
        batch, _, frames, height, width = z.shape
        if v_uncond is not None and v_uncond.dtype != v.dtype:  # the kernel reads one velocity dtype
            v, v_uncond = v.float(), v_uncond.float()
        inputs = [t.contiguous() if t is not None else None
                  for t in (z, v, v_uncond, prev_x0, prev_z_next, prev_certain, active)]
        z, v, v_uncond, prev_x0, prev_z_next, prev_certain, active = inputs
        noise_tensor = philox_keys = None
        step = iteration = 0
        if isinstance(noise, PhiloxNoise):
            philox_keys = noise.key_table(z.device)  # (B, 2) words: a few bytes to the device
            step, iteration = noise.step, noise.iteration
        elif noise is not None:
            noise_tensor = noise.to(torch.float32).contiguous()
        inputs += [noise_tensor, philox_keys]

        mask_shape = (batch, frames, height, width)
        out = out if out is not None else PnPUpdateOutput(None, None, None, None, None, None, None)
        taken = list(inputs)
        x0 = certain = z_perturbed = uncertainty = None
        if store_state:
            x0 = _kernel_target(out.x0, z.shape, torch.float32, z.device, taken)
            certain = _kernel_target(out.certain, mask_shape, torch.bool, z.device, taken)
        z_next = _kernel_target(out.z_next, z.shape, torch.float32, z.device, taken)
        if noise is not None:
            z_perturbed = _kernel_target(out.z_perturbed, z.shape, torch.float32, z.device, taken)
        if return_uncertainty:
            uncertainty = _kernel_target(out.uncertainty, mask_shape, torch.float32, z.device, taken)
        counts = torch.empty((batch, 2), dtype=torch.int32, device=z.device)

        torch.ops.pnp_kernels.pnp_update_cuda(
            z, v, v_uncond, guidance_scale, sigma, sigma_next - sigma,
            prev_x0, prev_z_next, prev_certain, tau, p_norm,
            noise_tensor, philox_keys, step, iteration, active, num_pinned_frames,
            x0, z_next, certain, counts, z_perturbed, uncertainty,
        )
        num_free = (frames - num_pinned_frames) * height * width
        result = PnPUpdateOutput(
            x0=x0,
            z_next=z_next,
            certain=certain,
            certain_fraction=counts[:, 0].float() / max(num_free, 1),
            nonfinite=counts[:, 1],
            z_perturbed=z_perturbed,
            uncertainty=uncertainty,
            backend="cuda",
        )
        return write_outputs(result, out)
