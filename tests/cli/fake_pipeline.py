"""A stand-in for the Wan pipeline that samples a tiny latent with the real ``pnp_sample`` and returns
random frames: the command line's writing, signal and failure paths run in a fraction of a second."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pnp_kernels import pnp_sample


def fake_load_pipeline(settings, with_image):
    return SimpleNamespace(nan=False)


def nan_load_pipeline(settings, with_image):
    """A pipeline whose model returns NaN."""
    return SimpleNamespace(nan=True)


def fake_generate(pipe, settings, image, pnp, capture_uncertainty):
    """What ``pnp_kernels.cli_common.pipeline.generate`` returns, from a toy velocity field (NaN when ``pipe.nan``)."""
    latent_frames = (settings.frames - 1) // 4 + 1
    latents = torch.randn(1, 4, latent_frames, settings.height // 8, settings.width // 8,
                          generator=torch.Generator().manual_seed(settings.seed))

    def denoise(z, step, sigma):
        return torch.full_like(z, float("nan")) if pipe.nan else torch.tanh(z) - 0.5 * z

    sigmas = torch.linspace(1.0, 0.0, settings.steps + 1)
    result = pnp_sample(denoise, latents, sigmas, pnp, generator=torch.Generator().manual_seed(settings.seed),
                        capture_uncertainty=capture_uncertainty)
    frames = np.random.default_rng(settings.seed).random((settings.frames, settings.height, settings.width, 3),
                                                         dtype=np.float32)
    return SimpleNamespace(frames=[frames], pnp_stats=result.stats, attention_backend="fake"), 0.01
