"""A deliberately naive P&P loop (docs/ALGORITHM.md, "The loop") and toy denoisers, shared by the tests.

Plain Python loops over samples and channels, one sample's state at a time, no fused op, no
buffer reuse: slow and obvious, so that the library can be checked against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pnp_kernels import Guided


# Over 60 lines on purpose: the reference loop, read top to bottom like the published one.
def naive_pnp(denoise, latents, sigmas, ranges, tau, p_norm, certain_stop, generator, num_pinned_frames=0):
    """The loop of docs/ALGORITHM.md with per-sample state and per-sample early exit; ``generator`` is one or a list."""
    sigmas = [float(s) for s in sigmas]
    z = latents.clone().float()
    batch, channels = z.shape[:2]

    def iterations(step):
        for first, last, k in ranges:
            if first <= step <= last:
                return k
        return 0

    def draw(done):
        if isinstance(generator, list):
            eps = torch.zeros_like(z)
            for b in range(batch):
                if not done[b]:
                    eps[b] = torch.randn(z.shape[1:], generator=generator[b])
            return eps
        return torch.randn(z.shape, generator=generator)

    for step in range(len(sigmas) - 1):
        s, s_next = sigmas[step], sigmas[step + 1]
        prev = [None] * batch  # per sample: (certain or None, x0, z_next)
        done = [False] * batch
        z_in = z.clone()
        for k in range(iterations(step) + 1):
            if k > 0:
                eps = draw(done)
                for b in range(batch):
                    if not done[b]:
                        z_in[b] = (1 - s) * prev[b][1] + s * eps[b]
                        z_in[b, :, :num_pinned_frames] = z[b, :, :num_pinned_frames]
            out = denoise(z_in, step, s)
            if isinstance(out, Guided):
                vel = out.uncond.float() + out.scale * (out.cond.float() - out.uncond.float())
            else:
                vel = out.float()
            for b in range(batch):
                if done[b]:
                    continue
                x0 = z_in[b] - s * vel[b]
                zn = z_in[b] + (s_next - s) * vel[b]
                x0[:, :num_pinned_frames] = z_in[b, :, :num_pinned_frames]
                zn[:, :num_pinned_frames] = z_in[b, :, :num_pinned_frames]
                certain = None
                if prev[b] is not None:
                    total = torch.zeros(z.shape[2:])
                    for c in range(channels):
                        total += (x0[c] - prev[b][1][c]).abs() ** p_norm
                    uncertainty = total ** (1.0 / p_norm) / channels
                    certain = uncertainty < tau
                    if prev[b][0] is not None:
                        certain = certain | prev[b][0]
                    certain[:num_pinned_frames] = False
                    for c in range(channels):
                        x0[c] = torch.where(certain, prev[b][1][c], x0[c])
                        zn[c] = torch.where(certain, prev[b][2][c], zn[c])
                    counted = certain[num_pinned_frames:]
                    if counted.float().mean() > certain_stop:
                        done[b] = True
                prev[b] = (certain, x0, zn)
            if all(done):
                break
        z = torch.stack([p[2] for p in prev])
    return z


class ToyDenoiser:
    """Velocity of an imperfect denoiser that knows a target per sample: the ideal (z - target) / s
    plus a spatially coupled, time-dependent error whose size ``gains[b]`` differs per sample.
    Each sample's output depends only on that sample, as with a real model."""

    def __init__(self, targets, gains, channels, seed=0, guided=False, scale=3.0):
        g = torch.Generator().manual_seed(seed)
        self.targets = targets
        self.gains = torch.as_tensor(gains, dtype=torch.float32).view(-1, 1, 1, 1, 1)
        self.w_cond = torch.randn(channels, channels, 3, 3, 3, generator=g) / (channels * 9)
        self.w_uncond = torch.randn(channels, channels, 3, 3, 3, generator=g) / (channels * 9)
        self.guided, self.scale = guided, scale
        self.calls = 0

    def velocity(self, z, sigma, weight):
        error = F.conv3d(torch.tanh(z), weight, padding=1) * (1.0 + sigma)
        return (z - self.targets) / max(sigma, 1e-3) + self.gains * error

    def __call__(self, z, step, sigma):
        self.calls += 1
        if self.guided:
            return Guided(self.velocity(z, sigma, self.w_cond), self.velocity(z, sigma, self.w_uncond), self.scale)
        return self.velocity(z, sigma, self.w_cond)

    def select(self, b):
        """The same denoiser restricted to sample b (for one-at-a-time runs)."""
        single = ToyDenoiser.__new__(ToyDenoiser)
        single.__dict__.update(self.__dict__)
        single.targets, single.gains, single.calls = self.targets[b : b + 1], self.gains[b : b + 1], 0
        return single
