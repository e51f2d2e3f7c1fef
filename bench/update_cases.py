"""The fused update's benchmark cases, in one place: Wan latent shapes, argument variants and the bytes
each must move (the op's own accounting), fresh random inputs, and the providers compared.

Every provider is called the same way, ``provider(inputs) -> PnPUpdateOutput`` on one checked
``PnPUpdateInputs`` bundle, and allocates its outputs: the eager reference, ``torch.compile`` of the
reference, and the Triton and CUDA backends (output buffers, then the backend's ``run``: what the
public op does after its argument checks and backend choice, which are host work that the host-time
benchmark measures on its own).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import torch

from bench.harness import DEVICE, bench_size, compile_backend
from pnp_kernels.ops import PhiloxNoise, PnPUpdateInputs, PnPUpdateOutput, accounting
from pnp_kernels.ops.accounting import SITUATIONS
from pnp_kernels.ops.backends import BACKENDS
from pnp_kernels.ops.outputs import output_buffers
from pnp_kernels.ops.reference import reference_update

# (B, C, F, H, W) latents of one sample, B = 1 as the targets state them.
SHAPES = {
    "full": {
        "480p-c16": (1, 16, 21, 60, 104),   # Wan 2.1 / 2.2 14B, 480x832, 81 frames
        "720p-c16": (1, 16, 21, 90, 160),   # the same at 720x1280
        "480p-c48": (1, 48, 31, 30, 52),    # Wan 2.2 TI2V-5B at 480x832, 121 frames: H*W too short for vector loads
        "704p-c48": (1, 48, 31, 44, 80),    # Wan 2.2 TI2V-5B at its 704x1280, 121 frames
    },
    "tiny": {
        "tiny-c16": (1, 16, 3, 6, 10),
        "tiny-c48": (2, 48, 2, 5, 7),
    },
}


@dataclass(frozen=True)
class Variant:
    """Which optional inputs one update has; ``noise`` is "none", "tensor" or "philox"."""

    guidance: bool
    prev: bool
    noise: str

    @property
    def situation(self) -> str:
        """The sampler situation this update is (``pnp_kernels/ops/accounting.py``)."""
        if self.prev:
            return "refined iteration" if self.noise != "none" else "last iteration"
        return "first iteration" if self.noise != "none" else "plain step"

    @property
    def store_state(self) -> bool:
        """As the sampler sets it: x0 and the certain mask are written only when another iteration follows."""
        return SITUATIONS[self.situation].store_state

    @property
    def name(self) -> str:
        return f"{'guided' if self.guidance else 'unguided'}, {'prev' if self.prev else 'first'}, {self.noise} noise"


# The updates a guided refined run makes, most important first: a refined iteration (the targets'
# headline case), the same with philox noise, a plain Euler step, the first and last refined iterations.
HEADLINE = Variant(guidance=True, prev=True, noise="tensor")
SAMPLING_VARIANTS = (
    HEADLINE,
    Variant(True, True, "philox"),
    Variant(True, False, "none"),
    Variant(True, False, "tensor"),
    Variant(True, True, "none"),
)
ALL_VARIANTS = tuple(Variant(g, p, n) for g in (True, False) for p in (True, False) for n in ("tensor", "philox", "none"))
PROVIDERS = ("eager", "compiled", "triton", "cuda")
VELOCITY_DTYPE = torch.bfloat16
SIGMA, SIGMA_NEXT, GUIDANCE, TAU = 0.7, 0.65, 5.0, 0.25


def variants() -> tuple[Variant, ...]:
    """``PNP_BENCH_UPDATE_VARIANTS``: "sampling" (default: the five a guided run makes) or "all" (12)."""
    which = os.environ.get("PNP_BENCH_UPDATE_VARIANTS", "sampling")
    if which not in ("sampling", "all"):
        raise ValueError(f"PNP_BENCH_UPDATE_VARIANTS must be 'sampling' or 'all', got {which!r}")
    return SAMPLING_VARIANTS if which == "sampling" else ALL_VARIANTS


def shapes() -> dict[str, tuple[int, ...]]:
    return SHAPES[bench_size()]


def bytes_moved(shape, variant: Variant) -> int:
    """Bytes one update of ``variant`` on ``shape`` must read and write (bf16 velocities)."""
    noise = "tensor" if variant.noise == "tensor" else "philox"  # "none": no noise bytes either way
    return accounting.bytes_moved(variant.situation, shape, velocity_bytes=VELOCITY_DTYPE.itemsize,
                                  guided=variant.guidance, noise=noise)


def make_inputs(shape, variant: Variant, seed: int, device=DEVICE) -> PnPUpdateInputs:
    """Fresh random inputs of one update, as the sampler passes them for ``variant``."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(dtype=torch.float32):
        return torch.randn(shape, generator=g, device=device).to(dtype)

    options = dict(tau=TAU, store_state=variant.store_state)
    if variant.guidance:
        options.update(v_uncond=randn(VELOCITY_DTYPE), guidance_scale=GUIDANCE)
    if variant.prev:
        mask_shape = (shape[0], *shape[2:])
        options.update(prev_x0=randn(), prev_z_next=randn(),
                       prev_certain=torch.rand(mask_shape, generator=g, device=device) < 0.3)
    if variant.noise == "tensor":
        options["noise"] = randn()
    elif variant.noise == "philox":
        options["noise"] = PhiloxNoise(tuple(seed + b for b in range(shape[0])), step=3, iteration=1)
    return PnPUpdateInputs(randn(), randn(VELOCITY_DTYPE), SIGMA, SIGMA_NEXT, **options)


def copied(inputs: PnPUpdateInputs) -> PnPUpdateInputs:
    """The same inputs in fresh memory (philox seeds shared: a compiled function sees one input kind)."""
    fields = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs)}
    return PnPUpdateInputs(**{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in fields.items()})


def provider_function(provider: str) -> Callable[[PnPUpdateInputs], PnPUpdateOutput]:
    """The function ``provider`` stands for (see the module docstring).

    The CUDA and Triton backends may be unavailable here: ask ``backend_reasons`` first.
    """
    if provider == "eager":
        return reference_update
    if provider == "compiled":
        torch._dynamo.reset()  # one fresh compile per case: no recompile limit, no guards carried over
        return torch.compile(reference_update, backend=compile_backend(), dynamic=False)
    if provider in ("triton", "cuda"):
        backend = BACKENDS[provider]

        def run(inputs: PnPUpdateInputs) -> PnPUpdateOutput:
            outputs = output_buffers(inputs, None)
            backend.run(inputs, outputs)
            return outputs

        return run
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def backend_reasons(name: str, inputs: PnPUpdateInputs) -> list[str]:
    """Why op backend ``name`` cannot run on ``inputs`` here ([] = it can)."""
    return BACKENDS[name].not_supported_reasons(inputs)
