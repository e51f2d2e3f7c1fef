"""``pnp_kernels::pnp_update``: the fused update registered with torch.library.

The only place where ``PnPUpdateInputs`` and the output buffers are flattened to an op schema. The
op writes every output into a buffer it is given (declared in ``mutates_args``) and returns
nothing; writing in place, not returning new tensors, is what lets the sampler double-buffer.
``torch.compile`` sees the op through its fake implementation and functionalizes the writes.

Philox noise crosses the op boundary as plain integers (the key words of each sample's seed, step,
iteration) so that no device tensor and no host read is needed to describe it.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from .backends import BACKENDS
from .inputs import PnPUpdateInputs
from .outputs import TENSOR_FIELDS, PnPUpdateOutput
from .philox import PhiloxNoise, from_words, to_words


# Cached both ways: a run's seeds are converted once, not at every update that crosses the op.
@functools.lru_cache(maxsize=32)
def _words_of(seeds: tuple[int, ...]) -> list[int]:
    return to_words(seeds)


@functools.lru_cache(maxsize=32)
def _seeds_of(words: tuple[int, ...]) -> tuple[int, ...]:
    return from_words(words)


@torch.library.custom_op("pnp_kernels::pnp_update", mutates_args=TENSOR_FIELDS)
def pnp_update_op(
    z: torch.Tensor,
    v: torch.Tensor,
    v_uncond: Optional[torch.Tensor],
    prev_x0: Optional[torch.Tensor],
    prev_z_next: Optional[torch.Tensor],
    prev_certain: Optional[torch.Tensor],
    active: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    philox_key_words: Optional[list[int]],
    philox_step: int,
    philox_iteration: int,
    sigma: float,
    sigma_next: float,
    guidance_scale: float,
    tau: float,
    p_norm: int,
    num_pinned_frames: int,
    round_products_to: Optional[torch.dtype],
    backend: str,
    x0: Optional[torch.Tensor],
    z_next: torch.Tensor,
    certain: Optional[torch.Tensor],
    certain_fraction: torch.Tensor,
    nonfinite: torch.Tensor,
    z_perturbed: Optional[torch.Tensor],
    uncertainty: Optional[torch.Tensor],
) -> None:
    """Run backend ``backend`` (a name of ``backends.BACKENDS``) and write the given buffers. The
    arguments are trusted: ``call_op`` flattens a bundle that ``pnp_update`` or the engine checked."""
    if philox_key_words is not None:
        noise = PhiloxNoise.trusted(_seeds_of(tuple(philox_key_words)), philox_step, philox_iteration)
    inputs = PnPUpdateInputs.trusted(
        z, v, sigma, sigma_next, v_uncond=v_uncond, guidance_scale=guidance_scale, prev_x0=prev_x0,
        prev_z_next=prev_z_next, prev_certain=prev_certain, tau=tau, p_norm=p_norm, noise=noise, active=active,
        num_pinned_frames=num_pinned_frames, return_uncertainty=uncertainty is not None,
        store_state=x0 is not None, round_products_to=round_products_to,
    )
    outputs = PnPUpdateOutput(x0, z_next, certain, certain_fraction, nonfinite, z_perturbed, uncertainty)
    BACKENDS[backend].run(inputs, outputs)


@pnp_update_op.register_fake
def _pnp_update_fake(*args) -> None:
    """The op only writes its output arguments: nothing to allocate or return."""


def call_op(inputs: PnPUpdateInputs, outputs: PnPUpdateOutput, backend: str) -> None:
    """``pnp_update_op`` on a bundle: the inverse of the unflattening above."""
    philox = inputs.philox
    pnp_update_op(
        inputs.z, inputs.v, inputs.v_uncond, inputs.prev_x0, inputs.prev_z_next, inputs.prev_certain,
        inputs.active, inputs.noise_tensor,
        None if philox is None else _words_of(philox.seeds),
        0 if philox is None else philox.step, 0 if philox is None else philox.iteration,
        inputs.sigma, inputs.sigma_next, inputs.guidance_scale, inputs.tau, inputs.p_norm,
        inputs.num_pinned_frames, inputs.round_products_to, backend,
        *outputs[: len(TENSOR_FIELDS)],
    )
