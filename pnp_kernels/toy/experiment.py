"""Sampling point clouds with the library's ``pnp_sample``, and the plans the toy compares.

A cloud of n points is one latent of shape (1, 2, n, 1, 1): the 2 channels are the coordinates and
the n "frames" are the points, so the uncertainty mask of uncertainty-aware P&P is per point.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PnPConfig, RefinePlan
from ..sampler import pnp_sample
from ..threads import single_thread
from .model import VelocityMLP

PLACEMENTS = ("early", "middle", "late", "all")


def sigma_grid(num_steps: int) -> torch.Tensor:
    """Uniform grid from 1 (noise) to 0 (data), ``num_steps + 1`` values."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)


def initial_noise(num_points: int, seed: int) -> torch.Tensor:
    """The starting cloud at sigma = 1, as a (1, 2, n, 1, 1) latent."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, num_points, 1, 1, generator=generator)


def cloud_denoiser(model: VelocityMLP):
    """``denoise(z, step, sigma)`` for pnp_sample: reshapes the (1, 2, n, 1, 1) latent to (n, 2) points."""

    @torch.no_grad()
    def denoise(z: torch.Tensor, step: int, sigma: float) -> torch.Tensor:
        points = z.reshape(2, -1).T
        return model(points, sigma).T.reshape(z.shape)

    return denoise


def latent_to_points(latent: torch.Tensor) -> torch.Tensor:
    return latent.reshape(2, -1).T.contiguous()


@dataclass(frozen=True)
class Placement:
    name: str
    first: int
    last: int  # inclusive outer step indices
    sigma_high: float  # sigma at the first refined step
    sigma_low: float  # sigma at the last refined step

    def plan(self, iterations: int) -> RefinePlan:
        return RefinePlan([(self.first, self.last, iterations)])

    def describe(self) -> str:
        return f"steps {self.first}-{self.last} (sigma {self.sigma_high:.3g}..{self.sigma_low:.3g})"


def placement(name: str, num_steps: int) -> Placement:
    """Where P&P goes on an N-step grid. early/middle/late each cover a quarter of the steps (at least
    one): early = highest sigma (paper time t = 1 - sigma near 0), late = lowest sigma (t near 1)."""
    if name not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {name!r}")
    sigmas = sigma_grid(num_steps).tolist()
    width = max(1, num_steps // 4)
    first = {"early": 0, "middle": (num_steps - width) // 2, "late": num_steps - width, "all": 0}[name]
    last = num_steps - 1 if name == "all" else first + width - 1
    return Placement(name, first, last, sigmas[first], sigmas[last])


@dataclass(frozen=True)
class Variant:
    """One sampler setting of the comparison: plain Euler (no placement) or P&P."""

    num_steps: int
    placement: Placement | None = None
    iterations: int = 0  # K
    tau: float = 0.0

    @property
    def method(self) -> str:
        return "p&p" if self.placement is not None else "euler"

    def config(self) -> PnPConfig:
        plan = self.placement.plan(self.iterations) if self.placement is not None else RefinePlan([])
        # certain_stop=1.0: the cloud is one latent, so it must never stop early as a whole.
        return PnPConfig(plan=plan, tau=self.tau, certain_stop=1.0, backend="torch")


def pnp_variants(num_steps: int, iterations=(1, 3), taus=(0.0,)) -> list[Variant]:
    """P&P at every placement of an N-step grid, for each K and tau."""
    return [
        Variant(num_steps, placement(name, num_steps), k, tau)
        for name in PLACEMENTS for k in iterations for tau in taus
    ]


def generate(model: VelocityMLP, noise: torch.Tensor, variant: Variant, seed: int) -> tuple[torch.Tensor, int]:
    """Sample a cloud from ``noise`` (a (1, 2, n, 1, 1) latent) with ``variant``.

    Returns (points (n, 2), model evaluations counted by the sampler). ``seed`` seeds the
    perturbation noise (the published draw order: one randn of the latent per perturbation).
    """
    result = pnp_sample(
        cloud_denoiser(model), noise, sigma_grid(variant.num_steps), variant.config(),
        generator=torch.Generator().manual_seed(seed),
    )
    return latent_to_points(result.latents), result.stats.nfe
