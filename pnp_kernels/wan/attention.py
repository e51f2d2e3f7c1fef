"""Choice of the attention backend for the Wan transformers, with the reason each candidate was refused.

``attention="auto"`` walks ``ATTENTION_BACKEND_PRIORITY`` (fastest exact kernel first) and takes the first backend with
no reason against the device, dtype and head size; ``native`` (PyTorch SDPA) always runs. 8-bit Sage
attention is not exact and is used only when asked for by name. Any other name of diffusers'
``AttentionBackendName`` may be asked for; diffusers checks those itself. A backend the user set on the
model (``set_attention_backend``) is what "auto" keeps. The choice is applied for the duration of one
pipeline call (diffusers' ``attention_backend`` context manager), so the user's models are left as they
were.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..compat import (
    ATTENTION_VERSION_FLOORS,
    context_parallel_backends,
    processor_backend,
    processors_with_backend,
    set_processor_backend,
)
from ..first_choice import first_without_reasons

logger = logging.getLogger("pnp_kernels")

# Fastest exact first (FlashAttention 3 on Hopper, FlashAttention 2, cuDNN SDPA on Hopper, xformers,
# then PyTorch's own SDPA, which picks its best kernel itself).
ATTENTION_BACKEND_PRIORITY = ("_flash_3", "flash", "_native_cudnn", "xformers", "native")
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class AttentionInputs:
    """What decides whether a backend can run: where and in which dtype the transformer runs."""

    device: torch.device
    dtype: torch.dtype
    head_dim: int
    # enable_parallelism was called: each rank holds a share of the tokens, and a backend diffusers does not
    # run context-parallel would attend over that share only (wrong results, no error).
    context_parallel: bool = False


def _cuda_reasons(inputs: AttentionInputs, min_capability: tuple[int, int] | None = None,
                  max_capability: tuple[int, int] | None = None) -> list[str]:
    if inputs.device.type != "cuda":
        return [f"needs a CUDA device, the transformer runs on {inputs.device.type}"]
    capability = torch.cuda.get_device_capability(inputs.device)
    if min_capability is not None and capability < min_capability:
        return [f"needs compute capability >= {min_capability[0]}.{min_capability[1]}, device has {capability[0]}.{capability[1]}"]
    if max_capability is not None and capability > max_capability:
        return [f"needs compute capability <= {max_capability[0]}.{max_capability[1]} (Hopper), device has {capability[0]}.{capability[1]}"]
    return []


def _half_reasons(inputs: AttentionInputs) -> list[str]:
    if inputs.dtype not in HALF_DTYPES:
        return [f"needs float16 or bfloat16, the transformer is {inputs.dtype}"]
    return []


def _head_dim_reasons(inputs: AttentionInputs, limit: int) -> list[str]:
    return [f"needs head_dim <= {limit}, got {inputs.head_dim}"] if inputs.head_dim > limit else []


def _package_reasons(available: bool, what: str) -> list[str]:
    return [] if available else [f"{what} is not installed (or too old for diffusers)"]


def _flash3_reasons(inputs: AttentionInputs) -> list[str]:
    from diffusers.utils import is_flash_attn_3_available

    return (_package_reasons(is_flash_attn_3_available(), "FlashAttention 3 (flash_attn_interface)")
            + _cuda_reasons(inputs, (9, 0), (9, 0)) + _half_reasons(inputs) + _head_dim_reasons(inputs, 256))


def _flash2_reasons(inputs: AttentionInputs) -> list[str]:
    from diffusers.utils import is_flash_attn_available, is_flash_attn_version

    floor = ATTENTION_VERSION_FLOORS["flash"]
    installed = is_flash_attn_available() and is_flash_attn_version(">=", floor)
    return (_package_reasons(installed, f"flash-attn>={floor}")
            + _cuda_reasons(inputs, (8, 0)) + _half_reasons(inputs) + _head_dim_reasons(inputs, 256))


def _cudnn_reasons(inputs: AttentionInputs) -> list[str]:
    reasons = _cuda_reasons(inputs, (9, 0), (9, 0))
    if not reasons and not torch.backends.cudnn.is_available():
        reasons.append("cuDNN is not available to PyTorch")
    return reasons + _half_reasons(inputs) + _head_dim_reasons(inputs, 128)


def _xformers_reasons(inputs: AttentionInputs) -> list[str]:
    from diffusers.utils import is_xformers_available, is_xformers_version

    floor = ATTENTION_VERSION_FLOORS["xformers"]
    installed = is_xformers_available() and is_xformers_version(">=", floor)
    return _package_reasons(installed, f"xformers>={floor}") + _cuda_reasons(inputs)


def _native_reasons(inputs: AttentionInputs) -> list[str]:
    return []


def _sage_reasons(inputs: AttentionInputs) -> list[str]:
    from diffusers.utils import is_sageattention_available, is_sageattention_version

    floor = ATTENTION_VERSION_FLOORS["sage"]
    installed = is_sageattention_available() and is_sageattention_version(">=", floor)
    return _package_reasons(installed, f"sageattention>={floor}") + _cuda_reasons(inputs, (8, 0)) + _half_reasons(inputs)


# Backends this module knows the limits of; other diffusers backends are checked by diffusers.
NOT_SUPPORTED_REASONS: dict[str, Callable[[AttentionInputs], list[str]]] = {
    "_flash_3": _flash3_reasons,
    "flash": _flash2_reasons,
    "_native_cudnn": _cudnn_reasons,
    "xformers": _xformers_reasons,
    "native": _native_reasons,
    "sage": _sage_reasons,
}


@dataclass
class AttentionChoice:
    """The backend a call uses, what was asked for, and why better candidates were refused."""

    backend: str
    requested: str
    refused: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"attention: {self.backend} (requested {self.requested!r})"]
        lines += [f"  {name} refused: {'; '.join(reasons)}" for name, reasons in self.refused.items()]
        return "\n".join(lines)


def known_backend_names() -> set[str]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return {member.value for member in AttentionBackendName}


def _reasons(name: str, inputs: AttentionInputs) -> list[str]:
    reasons = NOT_SUPPORTED_REASONS[name](inputs) if name in NOT_SUPPORTED_REASONS else []
    if inputs.context_parallel and name not in context_parallel_backends():
        reasons.append("diffusers does not run it under context parallelism")
    return reasons


def choose_attention_backend(requested: str, inputs: AttentionInputs, model_backend: str | None = None) -> AttentionChoice:
    """Resolve ``"auto"`` or a diffusers backend name; raise ValueError with the reasons if a requested
    backend cannot run on ``inputs``. ``model_backend`` (set on the model by the user) is what "auto"
    keeps."""
    if not isinstance(requested, str):
        raise TypeError(f"attention must be 'auto' or a diffusers attention backend name, got {requested!r}")
    name = requested.lower()
    if name == "auto" and model_backend is not None:
        if inputs.context_parallel and model_backend not in context_parallel_backends():
            raise ValueError(f"the transformer's attention backend {model_backend!r} (set_attention_backend) "
                             "does not run under context parallelism in diffusers")
        return AttentionChoice(model_backend, requested)
    if name == "auto":
        chosen, refused = first_without_reasons(ATTENTION_BACKEND_PRIORITY, lambda candidate: _reasons(candidate, inputs))
        if chosen is not None:
            choice = AttentionChoice(chosen, requested, refused)
            logger.info(choice.describe())
            return choice
        raise ValueError("no attention backend can run: " + "; ".join(f"{n}: {', '.join(r)}" for n, r in refused.items()))
    known = known_backend_names()
    if name not in known:
        raise ValueError(f"attention must be 'auto' or one of {sorted(known)}, got {requested!r}")
    reasons = _reasons(name, inputs)
    if reasons:
        raise ValueError(f"attention={requested!r} cannot run: {'; '.join(reasons)}")
    return AttentionChoice(name, requested)


def model_attention_backend(models) -> str | None:
    """The backend the user set on the transformers with ``set_attention_backend``, if any."""
    backends = [processor_backend(p) for p in processors_with_backend(models)]
    names = {str(getattr(b, "value", b)) for b in backends if b is not None}
    return names.pop() if len(names) == 1 else None


@contextlib.contextmanager
def use_attention_backend(choice: AttentionChoice, models):
    """Runs the transformers with the chosen backend for the duration of the block: diffusers'
    ``attention_backend`` context (which checks the backend's requirements) plus, for processors with a
    per-model backend, that backend swapped and restored, so the user's models are left as they were."""
    from diffusers.models.attention_dispatch import AttentionBackendName, attention_backend

    backend = AttentionBackendName(choice.backend)
    processors = [p for p in processors_with_backend(models) if processor_backend(p) is not None]
    saved = [processor_backend(p) for p in processors]
    with attention_backend(backend):
        for p in processors:
            set_processor_backend(p, backend)
        try:
            yield
        finally:
            for p, old in zip(processors, saved):
                set_processor_backend(p, old)
