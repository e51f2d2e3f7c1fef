"""Backends of the fused update as data: what each supports, and why it cannot run (STYLE.md).

Every backend has ``name``, ``auto_devices`` (device types "auto" may pick it for; None = any),
``not_supported_reasons(z, v, v_uncond) -> list[str]`` and ``run(z, v, sigma, sigma_next, *,
out=None, **kwargs) -> PnPUpdateOutput`` with the keyword arguments of ``pnp_update_reference``.

"auto" walks ``AUTO_PRIORITY`` and takes the first backend with no reasons against the inputs; an
explicitly requested backend that cannot run raises with its reasons. Nothing heavy is imported
here: Triton is imported the first time its backend is considered.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math

import torch

from .reference import PnPUpdateOutput, pnp_update_reference

logger = logging.getLogger("pnp_kernels")

AUTO_PRIORITY = ("triton", "cuda", "torch")
SUPPORTED_VELOCITY_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def write_outputs(result: PnPUpdateOutput, out: PnPUpdateOutput | None) -> PnPUpdateOutput:
    """Copy a freshly computed result into caller-owned tensors where given."""
    if out is None:
        return result
    fields = {}
    for name, value in result._asdict().items():
        target = getattr(out, name)
        if target is None or value is None:
            fields[name] = value
        else:
            if target.shape != value.shape or target.dtype != value.dtype:
                raise ValueError(
                    f"out.{name} has shape {tuple(target.shape)} / {target.dtype}, "
                    f"expected {tuple(value.shape)} / {value.dtype}"
                )
            fields[name] = target.copy_(value)
    return PnPUpdateOutput(**fields)


class TorchBackend:
    """The pure-PyTorch reference: runs anywhere, it is the specification."""

    name = "torch"
    auto_devices = None

    def not_supported_reasons(self, z, v, v_uncond) -> list[str]:
        return []

    def run(self, z, v, sigma, sigma_next, *, out=None, **kwargs) -> PnPUpdateOutput:
        return write_outputs(pnp_update_reference(z, v, sigma, sigma_next, **kwargs), out)


class TritonBackend:
    """The fused Triton kernel (``triton_kernel.py``): CUDA tensors, or CPU under TRITON_INTERPRET=1."""

    name = "triton"
    auto_devices = ("cuda",)  # the CPU interpreter is for tests, far slower than the reference
    max_channels = 64
    max_batch = 65535  # the sample is the second grid axis

    def not_supported_reasons(self, z, v, v_uncond) -> list[str]:
        reasons = []
        if z.device.type != "cuda" and not _triton_interpreter_on():
            reasons.append(
                f"needs CUDA tensors, got {z.device.type} tensors (on the CPU it runs only in Triton's "
                "interpreter: set TRITON_INTERPRET=1 before triton is imported)"
            )
        if z.dim() == 5 and z.shape[1] > self.max_channels:
            reasons.append(f"handles at most {self.max_channels} channels, got C={z.shape[1]}")
        if z.dim() == 5 and z.shape[0] > self.max_batch:
            reasons.append(f"handles at most {self.max_batch} samples per launch, got B={z.shape[0]}")
        if z.dim() == 5 and math.prod(z.shape[1:]) >= 2**31:
            reasons.append(f"indexes a sample with int32, got {math.prod(z.shape[1:])} elements per sample")
        for name, t in (("v", v), ("v_uncond", v_uncond)):
            if t is not None and t.dtype not in SUPPORTED_VELOCITY_DTYPES:
                reasons.append(f"{name} dtype {t.dtype} is not float32, bfloat16 or float16")
        load_error = _triton_load_error()
        if load_error:
            reasons.append(load_error)
        return reasons

    def run(self, z, v, sigma, sigma_next, *, out=None, **kwargs) -> PnPUpdateOutput:
        load_error = _triton_load_error()
        if load_error:
            raise RuntimeError(f"backend 'triton' cannot run: {load_error}")
        launcher = importlib.import_module(".triton_launch", __package__)
        return launcher.run_triton(z, v, sigma, sigma_next, out=out, **kwargs)


class UnavailableBackend:
    """Stands in for a backend whose module is missing or failed to import; says why, once."""

    auto_devices = None

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def not_supported_reasons(self, z, v, v_uncond) -> list[str]:
        return [self.reason]

    def run(self, z, v, sigma, sigma_next, *, out=None, **kwargs) -> PnPUpdateOutput:
        raise RuntimeError(f"backend {self.name!r} cannot run: {self.reason}")


# The two checks below run once, eagerly even while torch.compile traces (their results are
# constants to it), so that a compiled sampler never breaks its graph on an import.
@torch.compiler.assume_constant_result
def _triton_interpreter_on() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    import triton  # only reached for non-CUDA tensors, where the interpreter is the question

    return bool(triton.knobs.runtime.interpret)


_triton_load_errors: list[str] = []  # filled once: the first load attempt's outcome


@torch.compiler.assume_constant_result
def _triton_load_error() -> str:
    """Why the Triton kernel cannot be loaded ("" when it can); tried once, the failure remembered."""
    if not _triton_load_errors:
        if importlib.util.find_spec("triton") is None:
            error = "triton is not installed (pip install 'pnp-kernels[triton]')"
        else:
            try:
                importlib.import_module(".triton_launch", __package__)
                error = ""
            except ImportError as failure:
                error = f"importing the Triton kernel failed: {failure}"
                logger.warning("pnp_update: %s", error)
        _triton_load_errors.append(error)
    return _triton_load_errors[0]


def _load_cuda_backend():
    """The CUDA C++ backend from ``cuda_backend.py`` (its own checks say whether the extension is built)."""
    module_name = f"{__package__}.cuda_backend"
    if importlib.util.find_spec(module_name) is None:
        return UnavailableBackend("cuda", f"{module_name} is not part of this installation")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        logger.warning("pnp_update: importing %s failed: %s", module_name, error)
        return UnavailableBackend("cuda", f"importing {module_name} failed: {error}")
    return module.CudaBackend()


# Defined last: cuda_backend may import helpers from this module.
BACKENDS = {"triton": TritonBackend(), "cuda": _load_cuda_backend(), "torch": TorchBackend()}
_reported: set[tuple[str, str]] = set()


def auto_reasons(name: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None) -> list[str]:
    """Why "auto" would not pick backend ``name`` for these inputs ([] = it would)."""
    backend = BACKENDS[name]
    devices = getattr(backend, "auto_devices", None)
    if devices is not None and z.device.type not in devices:
        return [f"auto uses it only for {'/'.join(devices)} tensors, got {z.device.type}"]
    return backend.not_supported_reasons(z, v, v_uncond)


def select_backend(requested: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None,
                   round_products_to: torch.dtype | None = None):
    """The backend object for ``requested`` ("auto" or a name), or an error listing the reasons."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {requested!r}")
        backend = BACKENDS[requested]
        reasons = backend.not_supported_reasons(z, v, v_uncond) + _rounding_reasons(requested, round_products_to)
        if reasons:
            raise RuntimeError(f"backend {requested!r} cannot run on these inputs: {'; '.join(reasons)}")
        return backend
    refused = {}
    for name in AUTO_PRIORITY:
        reasons = auto_reasons(name, z, v, v_uncond) + _rounding_reasons(name, round_products_to)
        if not reasons:
            _report_choice(name, z.device.type, refused)
            return BACKENDS[name]
        refused[name] = reasons
    details = "; ".join(f"{n}: {', '.join(r)}" for n, r in refused.items())
    raise RuntimeError(f"no pnp_update backend can run on these inputs ({details})")


def _rounding_reasons(name: str, round_products_to: torch.dtype | None) -> list[str]:
    if round_products_to is None or name == "torch":
        return []
    return [f"round_products_to={round_products_to} is implemented by the torch backend only"]


def _report_choice(name: str, device_type: str, refused: dict[str, list[str]]) -> None:
    key = (name, device_type)
    if key in _reported or torch.compiler.is_compiling():  # once per device type; not while tracing
        return
    _reported.add(key)
    skipped = "; ".join(f"{n}: {', '.join(r)}" for n, r in refused.items())
    logger.info(
        "pnp_update: backend 'auto' chose %r for %s tensors%s", name, device_type,
        f" (skipped {skipped})" if skipped else "",
    )
