"""The study's controls: Restart sampling (re-noise a window back to its start and re-solve it) and a
broken P&P whose perturbation noise is too strong."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..threads import single_thread
from .generate import clip_generators, clip_noise, euler_step, initial_noise, sigma_grid
from .model import PhysicsVelocityNet

RESTART_STREAM = 0x2E57A27  # Restart's noise must not replay a clip's initial noise stream
BROKEN_SCALE = 10.0


@torch.no_grad()
def restart_sample(model: torch.nn.Module, seeds: Sequence[int], num_steps: int, shift: float,
                   first: int, last: int, restarts: int) -> torch.Tensor:
    """Euler on ``sigma_grid(num_steps, shift)``; after step ``last``, ``restarts`` times: re-noise from
    sigma[last + 1] back to sigma[first] along the forward process and re-solve steps first..last.

    The forward process of z = (1 - s) x + s eps from s_lo to s_hi is z_hi = a z_lo + b eps' with
    a = (1 - s_hi) / (1 - s_lo) and b^2 = s_hi^2 - a^2 s_lo^2, so a re-noised clip has the marginal of
    s_hi. Each clip draws its noise from its own generator, so a clip does not depend on its batch.
    Model calls: num_steps + restarts * (last - first + 1).
    """
    sigmas = sigma_grid(num_steps, shift).tolist()
    generators = clip_generators(seeds, RESTART_STREAM)
    with single_thread():
        z = initial_noise(seeds, model)
        for step in range(num_steps):
            z = euler_step(model, z, sigmas, step)
            if step != last:
                continue
            low, high = sigmas[last + 1], sigmas[first]
            a = (1.0 - high) / (1.0 - low)
            b = math.sqrt(max(high * high - a * a * low * low, 0.0))
            for _ in range(restarts):
                z = a * z + b * clip_noise(generators, z.shape[1:])
                for again in range(first, last + 1):
                    z = euler_step(model, z, sigmas, again)
    return z


class NoisierPerturbation(torch.nn.Module):
    """Negative control: the model is shown P&P's perturbed inputs with their noise ``scale`` x too strong.

    A call at the same sigma as the previous call is a perturbed input z' = (1 - s) x0 + s eps, where
    x0 = z - s v from the previous call; the model gets (1 - s) x0 + scale s eps instead. Exact for tau = 0
    (nothing frozen), which is how the study uses it."""

    def __init__(self, model: PhysicsVelocityNet, scale: float = BROKEN_SCALE):
        super().__init__()
        self.model, self.scale, self.config = model, scale, model.config
        self.previous: tuple[float, torch.Tensor, torch.Tensor] | None = None

    def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        shown = z
        if self.previous is not None and self.previous[0] == sigma:
            _, z_before, v_before = self.previous
            x0 = z_before - sigma * v_before
            shown = z + (self.scale - 1.0) * (z - (1.0 - sigma) * x0)
        v = self.model(shown, sigma)
        self.previous = (sigma, z.clone(), v)  # the sampler may reuse z's buffer
        return v
