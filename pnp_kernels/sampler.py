"""Predict-and-Perturb sampling loop for flow-matching models (arXiv 2601.18577; docs/ALGORITHM.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, Union

import torch

from .config import PnPConfig
from .engine import IterationEvent, NonFiniteError, PnPEngine, PnPStats, StepStats
from .validators import check_callable

__all__ = ["Denoiser", "Guided", "IterationEvent", "NonFiniteError", "PnPResult", "PnPStats", "StepStats", "pnp_sample"]


@dataclass
class Guided:
    """Conditional and unconditional velocities; guidance ``uncond + scale * (cond - uncond)`` is fused
    into the update in float32."""

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float


Denoiser = Callable[[torch.Tensor, int, float], Union[torch.Tensor, Guided]]


class PnPResult(NamedTuple):
    latents: torch.Tensor
    stats: PnPStats


def _velocity(output, step: int, iteration: int) -> tuple:
    """The engine's ``feed`` arguments from what the denoiser returned."""
    if isinstance(output, Guided):
        return output.cond, output.uncond, output.scale
    if isinstance(output, torch.Tensor):
        return (output,)
    raise TypeError(
        f"denoiser must return a tensor or Guided at step {step}, iteration {iteration}, got {type(output).__name__}"
    )


def pnp_sample(
    denoise: Denoiser,
    latents: torch.Tensor,
    sigmas,
    config: PnPConfig | None = None,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    seed: int | Sequence[int] | None = None,
    num_pinned_frames: int = 0,
    capture_uncertainty: bool = False,
    callback: Callable[[IterationEvent], None] | None = None,
    step_end: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
    group="auto",
) -> PnPResult:
    """Euler sampling with Predict-and-Perturb refinement (arXiv 2601.18577, Algorithm 2).

    denoise(z, step_index, sigma) returns the velocity at (z, sigma), or ``Guided(cond, uncond, scale)``.
    latents: (B, C, F, H, W) initial noise at ``sigmas[0]``; sigmas: N + 1 non-increasing values in
    [0, 1]; the config's plan is resolved against them (``RefinePlan.resolve``). generator: perturbation
    noise for noise="generator" (one per sample for batch invariance; None: torch's global random state of
    the latents' device, as diffusers pipelines use without a generator); seed: for noise="philox".
    num_pinned_frames: leading latent frames held fixed (conditioning). callback(IterationEvent) runs
    after every model call; step_end(step, z) after each outer step, and a tensor it returns replaces
    the state (diffusers' callback_on_step_end). group: torch.distributed ranks that sample together
    and must agree on every early exit ("auto": all ranks when torch.distributed is initialised; None:
    decide alone; see ``PnPEngine``).
    Returns ``PnPResult(latents, stats)``; the input latents are not modified.
    """
    check_callable("denoise", denoise, optional=False)
    check_callable("step_end", step_end)
    engine = PnPEngine(
        PnPConfig() if config is None else config, sigmas, latents, generator=generator, seed=seed,
        num_pinned_frames=num_pinned_frames, capture_uncertainty=capture_uncertainty, callback=callback,
        group=group,
    )
    for step in range(engine.num_steps):
        sigma = engine.sigmas[step]
        z_in = engine.begin_step(step)  # the current state z
        while z_in is not None:  # the model's prediction, then each P&P iteration's perturbed input
            z_in = engine.feed(*_velocity(denoise(z_in, step, sigma), step, engine.iteration))
        if step_end is not None:
            replaced = step_end(step, engine.z)
            if replaced is not None:
                engine.set_state(replaced, source=f"the tensor step_end returned after step {step}")
    return PnPResult(engine.z, engine.finish())
