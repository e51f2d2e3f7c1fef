"""Sampling bouncing-ball clips from the shipped physics model with the library's ``pnp_sample``.

The initial noise of a clip depends only on its seed (``torch.Generator().manual_seed(seed)``), so a
baseline and a P&P run of the same seeds start from the same noise. P&P's perturbation noise is
counter-based (``noise="philox"``) keyed by the same clip seeds, so each clip's result does not depend
on which other clips share its batch; a config with ``noise="generator"`` gets one generator per
clip, seeded from the clip seed. Sigma runs from 1 (noise) to 0 (data) on a uniform grid.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from .. import PnPConfig, PnPStats, RefinePlan, pnp_sample
from ..threads import single_thread
from ..validators import check_bool, check_int, check_real
from .model import PhysicsVelocityNet, load_weights

DEFAULT_STEPS = 20  # 10 Euler steps were too few for this model to pass the quality gate (docs/PHYSICS_STUDY.md)
# Perturbation generators (noise="generator") must not replay the initial noise's stream.
PERTURBATION_STREAM = 0x5EED


@dataclass
class GeneratedClips:
    """Sampled clips: ``frames`` uint8 (B, F, H, W, 3) RGB, the sampler's ``stats`` and the final
    ``latents`` (B, 1, F, H, W) in [-1, 1] units."""

    frames: np.ndarray
    stats: PnPStats
    latents: torch.Tensor


@lru_cache(maxsize=1)
def shipped_model() -> PhysicsVelocityNet:
    """The weights shipped in the package (loaded once)."""
    return load_weights()


def sigma_grid(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """``num_steps + 1`` sigmas from 1 (noise) to 0 (data): uniform, or shifted towards the noise as
    flow-matching video schedules do (sigma' = shift s / (1 + (shift - 1) s); Wan and LTX use 3 to 5)."""
    uniform = torch.linspace(1.0, 0.0, check_int("num_steps", num_steps, low=1) + 1, dtype=torch.float64)
    shift = check_real("shift", shift, 0.0, low_open=True)
    return shift * uniform / (1.0 + (shift - 1.0) * uniform)


def clip_generators(seeds: Sequence[int], stream: int = 0) -> list[torch.Generator]:
    """One generator per clip, seeded ``seed ^ stream``: a clip's draws do not depend on its batch, and
    each stream (initial noise, Restart, re-noising) has draws of its own."""
    return [torch.Generator().manual_seed(s ^ stream) for s in seeds]


def clip_noise(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """(B, *shape) standard normal noise, row b drawn from ``generators[b]``."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def initial_noise(seeds: Sequence[int], model: PhysicsVelocityNet) -> torch.Tensor:
    """(B, 1, F, H, W) standard normal noise, clip b drawn from ``manual_seed(seeds[b])``."""
    shape = (1, model.config["num_frames"], model.config["size"], model.config["size"])
    return clip_noise(clip_generators(seeds), shape)


def euler_step(model: torch.nn.Module, z: torch.Tensor, sigmas: Sequence[float], step: int) -> torch.Tensor:
    """z after Euler step ``step`` of the grid ``sigmas`` (a list of floats)."""
    return z + (sigmas[step + 1] - sigmas[step]) * model(z, sigmas[step])


def latents_to_frames(latents: torch.Tensor) -> np.ndarray:
    """(B, 1, F, H, W) latents in [-1, 1] -> uint8 RGB frames (B, F, H, W, 3)."""
    grey = ((latents[:, 0].clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).numpy()
    return np.repeat(grey[..., None], 3, axis=-1)


def model_denoiser(model: PhysicsVelocityNet):
    """``denoise(z, step, sigma)`` for pnp_sample."""

    @torch.no_grad()
    def denoise(z: torch.Tensor, step: int, sigma: float) -> torch.Tensor:
        return model(z, sigma)

    return denoise


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise TypeError(f"seeds must be a non-empty sequence of integers, got {seeds!r}")
    return [check_int(f"seeds[{i}]", s, low=0, high=2**63 - 1) for i, s in enumerate(seeds)]


def generate(seeds: Sequence[int], config: PnPConfig | None, *, num_steps: int = DEFAULT_STEPS,
             shift: float = 1.0, capture_uncertainty: bool = False, progress: bool = False,
             model: PhysicsVelocityNet | None = None, group="auto") -> GeneratedClips:
    """Sample one clip per seed with ``num_steps`` Euler steps on ``sigma_grid(num_steps, shift)``,
    refined by ``config`` (None = plain Euler; its plan may take any form: steps, fractions, sigmas,
    presets).

    model: the network to sample (default: the shipped weights). Runs on one CPU thread: the network
    is small, and one thread is fastest on shared cores and fixes the order of reductions.
    group: as for ``pnp_sample``; None when torch.distributed ranks each sample their own clips.
    """
    seeds = _check_seeds(seeds)
    num_steps = check_int("num_steps", num_steps, low=1)
    sigmas = sigma_grid(num_steps, shift)
    check_bool("capture_uncertainty", capture_uncertainty)
    check_bool("progress", progress)
    if config is None:
        config = PnPConfig(plan=RefinePlan(()), noise="philox")
    if not isinstance(config, PnPConfig):
        raise TypeError(f"config must be a PnPConfig or None, got {type(config).__name__}")
    config = replace(config, plan=config.plan.resolve(sigmas))
    if model is None:
        model = shipped_model()
    if config.noise == "philox":
        noise_source = {"seed": seeds}
    else:
        noise_source = {"generator": clip_generators(seeds, PERTURBATION_STREAM)}
    with single_thread(), _progress_bar(progress, num_steps + config.plan.extra_nfe(num_steps)) as bar:
        latents, stats = pnp_sample(
            model_denoiser(model), initial_noise(seeds, model), sigmas, config,
            capture_uncertainty=capture_uncertainty, callback=bar, group=group, **noise_source,
        )
    return GeneratedClips(latents_to_frames(latents), stats, latents)


@contextmanager
def _progress_bar(enabled: bool, total: int):
    """A tqdm bar over model calls as a pnp_sample callback, or None when ``enabled`` is False."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="model calls", unit="call") as bar:
        yield lambda event: bar.update(event.nfe - bar.n)
