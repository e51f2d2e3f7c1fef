"""How much contrast a clean prediction loses each time P&P re-noises it: x0 at sigma 0.8, re-noised
to sigma 0.8 and predicted again, several times (docs/PHYSICS_PREREG.md)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..threads import single_thread
from .generate import clip_generators, clip_noise, euler_step, initial_noise, sigma_grid

RENOISE_STREAM = 0xC0A7  # the re-noising draws must not replay a clip's initial noise stream


def contrast(x0: torch.Tensor) -> np.ndarray:
    """Per clip: the mean over frames of (99th percentile - median) of the pixels, in [0, 1] units."""
    pixels = ((x0[:, 0].clamp(-1.0, 1.0) + 1.0) / 2.0).flatten(2).double()  # (B, F, H*W)
    spread = torch.quantile(pixels, 0.99, dim=2) - torch.quantile(pixels, 0.5, dim=2)
    return spread.mean(dim=1).numpy()


@torch.no_grad()
def contrast_per_renoise(model: torch.nn.Module, seeds: Sequence[int], sigma: float = 0.8,
                         renoises: int = 5, num_steps: int = 20) -> list[float]:
    """Mean over clips of contrast(after k re-noises) / contrast(before the first), k = 0..renoises.

    Sampling runs Euler on the uniform ``num_steps`` grid down to ``sigma`` (which must be on it)."""
    sigmas = sigma_grid(num_steps).tolist()
    matches = [i for i, s in enumerate(sigmas) if abs(s - sigma) < 1e-9]
    if not matches:
        raise ValueError(f"sigma must lie on the {num_steps}-step uniform grid, got {sigma}")
    generators = clip_generators(seeds, RENOISE_STREAM)
    with single_thread():
        z = initial_noise(seeds, model)
        for step in range(matches[0]):
            z = euler_step(model, z, sigmas, step)
        x0 = z - sigma * model(z, sigma)
        first = contrast(x0)
        ratios = [1.0]
        for _ in range(renoises):
            z = (1.0 - sigma) * x0 + sigma * clip_noise(generators, z.shape[1:])
            x0 = z - sigma * model(z, sigma)
            ratios.append(float(np.mean(contrast(x0) / np.maximum(first, 1e-9))))
    return ratios
