"""2-D datasets of the toy: a Gaussian mixture and a thin sine curve.

Each has a ``far`` distance: a generated point farther than this from every data point is counted
as off the data (about three times the data's own thickness).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


def _gaussian_mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    # Eight tight modes on a circle of radius 2: far apart relative to their spread, so a sample
    # between modes is clearly off the data.
    mode = torch.randint(0, 8, (n,), generator=generator)
    angle = mode.float() * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + 0.05 * torch.randn(n, 2, generator=generator)


def _sine(n: int, generator: torch.Generator) -> torch.Tensor:
    # A curve with a little thickness: x uniform on [-3, 3], y = sin(2x) + small noise.
    x = 6.0 * torch.rand(n, generator=generator) - 3.0
    y = torch.sin(2.0 * x) + 0.01 * torch.randn(n, generator=generator)
    return torch.stack([x, y], dim=1)


@dataclass(frozen=True)
class ToyDataset:
    name: str
    draw: Callable[[int, torch.Generator], torch.Tensor]
    far: float  # distance beyond which a sample counts as off the data


DATASETS = {
    "gmm": ToyDataset("gmm", _gaussian_mixture, far=0.15),
    "sine": ToyDataset("sine", _sine, far=0.03),
}


def get_dataset(name: str) -> ToyDataset:
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def sample_data(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` float32 points of dataset ``name`` as an (n, 2) tensor, reproducible from ``seed``."""
    dataset = get_dataset(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return dataset.draw(n, torch.Generator().manual_seed(seed))
