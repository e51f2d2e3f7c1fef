"""Backends of the fused update as data: what each supports, and why it cannot run.

Every backend has ``name``, ``auto_devices`` (device types "auto" may pick it for; None = any),
``not_supported_reasons(inputs) -> list[str]`` and ``run(inputs, outputs) -> None``, which writes
into the buffers of ``outputs`` (``outputs.py``) and allocates nothing latent-sized of its own.

"auto" walks ``OP_BACKEND_PRIORITY`` and takes the first backend with no reasons against the
inputs; an explicitly requested backend that cannot run raises with its reasons. Nothing heavy is
imported here: Triton is imported the first time its backend is considered, the CUDA extension
the first time CUDA tensors reach its backend.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math

import torch

from ..config import BACKENDS as BACKEND_NAMES
from ..first_choice import first_without_reasons
from .cuda_backend import MAX_BATCH, MAX_CHANNELS, CudaBackend
from .inputs import PnPUpdateInputs, kernel_limit_reasons
from .outputs import TENSOR_FIELDS, PnPUpdateOutput
from .reference import reference_update

logger = logging.getLogger("pnp_kernels")

AUTO = "auto"
# config.BACKENDS lists the op's backends after "auto" in the order auto prefers them.
OP_BACKEND_PRIORITY = tuple(name for name in BACKEND_NAMES if name != AUTO)


class TorchBackend:
    """The pure-PyTorch reference: runs anywhere, it is the specification."""

    name = "torch"
    auto_devices = None

    def not_supported_reasons(self, inputs: PnPUpdateInputs) -> list[str]:
        return []

    def run(self, inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
        result = reference_update(inputs)
        for name in TENSOR_FIELDS:
            target = getattr(outputs, name)
            if target is not None:
                target.copy_(getattr(result, name))


class TritonBackend:
    """The fused Triton kernel (``triton_kernel.py``): CUDA tensors, or CPU under TRITON_INTERPRET=1."""

    name = "triton"
    auto_devices = ("cuda",)  # the CPU interpreter is for tests, far slower than the reference

    def not_supported_reasons(self, inputs: PnPUpdateInputs) -> list[str]:
        # The CUDA kernel's limits: the Triton kernel keeps a position's channels in one program too.
        reasons = kernel_limit_reasons(inputs, MAX_CHANNELS, MAX_BATCH)
        z = inputs.z
        if not z.is_cuda and not _triton_interpreter_on():
            reasons.append(
                f"needs CUDA tensors, got {z.device.type} tensors (on the CPU it runs only in Triton's "
                "interpreter: set TRITON_INTERPRET=1 before triton is imported)"
            )
        per_sample = math.prod(z.shape[1:])
        if per_sample >= 2**31:
            reasons.append(f"indexes a sample with int32, got {per_sample} elements per sample")
        load_error = _triton_load_error()
        if load_error:
            reasons.append(load_error)
        return reasons

    def run(self, inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
        load_error = _triton_load_error()
        if load_error:
            raise RuntimeError(f"backend 'triton' cannot run: {load_error}")
        _triton_launcher[0].run_triton(inputs, outputs)


class UnavailableBackend:
    """Stands in for a backend that cannot run anywhere in this installation; says why."""

    auto_devices = None

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def not_supported_reasons(self, inputs: PnPUpdateInputs) -> list[str]:
        return [self.reason]

    def run(self, inputs: PnPUpdateInputs, outputs: PnPUpdateOutput) -> None:
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
_triton_launcher: list = []  # the launcher module, once it loaded


@torch.compiler.assume_constant_result
def _triton_load_error() -> str:
    """Why the Triton kernel cannot be loaded ("" when it can); tried once, the failure remembered."""
    if not _triton_load_errors:
        if importlib.util.find_spec("triton") is None:
            error = "triton is not installed (pip install 'pnp-kernels[triton]')"
        else:
            try:
                _triton_launcher.append(importlib.import_module(".triton_launch", __package__))
                error = ""
            except ImportError as failure:
                error = f"importing the Triton kernel failed: {failure}"
                logger.warning("pnp_update: %s", error)
        _triton_load_errors.append(error)
    return _triton_load_errors[0]


BACKENDS = {backend.name: backend for backend in (TritonBackend(), CudaBackend(), TorchBackend())}
_reported: set[tuple[str, str]] = set()


def _auto_reasons(name: str, inputs: PnPUpdateInputs) -> list[str]:
    backend = BACKENDS[name]
    devices = backend.auto_devices
    if devices is not None and inputs.z.device.type not in devices:
        return [f"auto uses it only for {'/'.join(devices)} tensors, got {inputs.z.device.type}"]
    return backend.not_supported_reasons(inputs)


def choose_backend(requested: str, inputs: PnPUpdateInputs):
    """The backend object for ``requested`` ("auto" or a name), or a RuntimeError listing the reasons."""
    if requested != AUTO:
        backend = BACKENDS[requested]
        reasons = backend.not_supported_reasons(inputs)
        if reasons:
            raise RuntimeError(f"backend {requested!r} cannot run on these inputs: {'; '.join(reasons)}")
        return backend
    name, refused = first_without_reasons(OP_BACKEND_PRIORITY, lambda candidate: _auto_reasons(candidate, inputs))
    if name is not None:
        _report_choice(name, inputs.z.device.type, refused)
        return BACKENDS[name]
    details = "; ".join(f"{n}: {', '.join(r)}" for n, r in refused.items())
    raise RuntimeError(f"no pnp_update backend can run on these inputs ({details})")


def _probe(z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None) -> PnPUpdateInputs:
    return PnPUpdateInputs(z, v, 0.0, 0.0, v_uncond=v_uncond)


def select_backend(requested: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None = None):
    """The backend ``pnp_update(z, v, ..., backend=requested)`` would run for tensors like these."""
    return choose_backend(requested, _probe(z, v, v_uncond))


def explicit_reasons(name: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None = None) -> list[str]:
    """Why backend ``name``, requested explicitly, would refuse tensors like these ([] = it would run)."""
    return BACKENDS[name].not_supported_reasons(_probe(z, v, v_uncond))


def auto_reasons(name: str, z: torch.Tensor, v: torch.Tensor, v_uncond: torch.Tensor | None = None) -> list[str]:
    """Why "auto" would not pick backend ``name`` for tensors like these ([] = it would)."""
    return _auto_reasons(name, _probe(z, v, v_uncond))


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
