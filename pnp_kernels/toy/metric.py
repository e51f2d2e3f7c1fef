"""How close generated points are to the data: nearest-neighbour distances to a fresh data draw.

``precision`` side: mean distance from each sample to its nearest data point, and the fraction of
samples farther than the dataset's ``far`` distance. ``coverage`` side: mean distance from each data
point to its nearest sample, which grows when samples collapse onto part of the data (a method can
look better on the first number by dropping modes; this one catches that).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import get_dataset, sample_data

REFERENCE_SIZE = 50_000
REFERENCE_SEED = 1_000_003  # never used for training draws or sampling noise


def nearest_distances(points: torch.Tensor, reference: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Distance from each row of ``points`` (n, d) to its nearest row of ``reference`` (m, d)."""
    if points.dim() != 2 or reference.dim() != 2 or points.shape[1] != reference.shape[1]:
        raise ValueError(f"points and reference must be (n, d) and (m, d), got {tuple(points.shape)} and {tuple(reference.shape)}")
    # |p - r|^2 = |p|^2 + |r|^2 - 2 p.r in float64: in float32 (and in torch.cdist, which uses the same
    # expansion) the cancellation costs ~1e-3 absolute, as large as the distances P&P reaches here.
    # Small chunks keep each (chunk, m) block in cache.
    reference = reference.double()
    reference_sq = reference.square().sum(dim=1)
    nearest = []
    for part in points.double().split(chunk):
        closest_sq = torch.addmm(reference_sq, part, reference.T, alpha=-2.0).amin(dim=1) + part.square().sum(dim=1)
        nearest.append(closest_sq.clamp_min(0.0).sqrt())
    return torch.cat(nearest).float()


@dataclass(frozen=True)
class ManifoldScore:
    mean_nn: float  # mean distance sample -> nearest data point (lower = closer to the data)
    far_fraction: float  # fraction of samples with that distance above the dataset's ``far``
    coverage_nn: float  # mean distance data point -> nearest sample (lower = data better covered)


class ManifoldMetric:
    """Scores point clouds of one dataset against one large fresh draw of it."""

    def __init__(self, dataset: str, reference_size: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED):
        self.far = get_dataset(dataset).far
        self.reference = sample_data(dataset, reference_size, seed)

    def score(self, samples: torch.Tensor) -> ManifoldScore:
        if samples.dim() != 2 or samples.shape[1] != 2:
            raise ValueError(f"samples must be an (n, 2) tensor, got shape {tuple(samples.shape)}")
        samples = samples.float()
        to_data = nearest_distances(samples, self.reference)
        # Coverage compares equal-sized clouds, so its floor does not depend on the reference size.
        to_samples = nearest_distances(self.reference[: samples.shape[0]], samples)
        return ManifoldScore(
            mean_nn=to_data.mean().item(),
            far_fraction=(to_data > self.far).float().mean().item(),
            coverage_nn=to_samples.mean().item(),
        )
