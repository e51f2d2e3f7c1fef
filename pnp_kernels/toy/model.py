"""The toy velocity model: a small MLP of the point and a sinusoidal embedding of sigma."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"


class VelocityMLP(nn.Module):
    """v(z, sigma) ~ eps - x for 2-D points z of shape (n, 2) and sigma a float or an (n,) tensor."""

    def __init__(self, hidden: int = 128, depth: int = 3, frequencies: int = 8):
        super().__init__()
        # Octave frequencies resolve sigma finely near 0, where the velocity field changes fastest.
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False
        )
        layers: list[nn.Module] = []
        width = 2 + 2 * frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device).expand(z.shape[0])
        angles = sigma[:, None] * self.frequencies
        return self.net(torch.cat([z, torch.sin(angles), torch.cos(angles)], dim=1))


def weights_path(dataset: str) -> Path:
    return WEIGHTS_DIR / f"{dataset}.pt"


def load_model(path: Path) -> VelocityMLP:
    model = VelocityMLP()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_shipped(dataset: str) -> VelocityMLP:
    """The trained weights shipped in the package for ``dataset``."""
    path = weights_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped toy weights for dataset {dataset!r} at {path}; "
            "run `python -m pnp_kernels.toy.train` to train them"
        )
    return load_model(path)


def save_model(model: VelocityMLP, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
