"""The physics velocity network: a small factorised space-time U-Net conditioned on sigma.

Input and output are latents (B, 1, F, H, W): grey frames scaled to [-1, 1] (the "latent" is the
pixels; there is no VAE). The network works on 2x2 pixel patches (a lossless space-to-depth reshape,
as a patchifying transformer would) because two shared CPU cores cannot afford full-resolution
layers in training. Each convolution is split into a spatial (1, 3, 3) and a temporal (3, 1, 1)
part, about half the cost of a full 3x3x3 kernel, and the 4x4 bottleneck has one self-attention over
all space-time positions, so that every frame sees the whole trajectory. Fixed coordinate channels
(t, y, x) tell the convolutions where they are (gravity points down; the first frame is special).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "bouncing_balls.safetensors"
EMBED_DIM = 128
PATCH = 2


def to_patches(z: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C * PATCH^2, F, H / PATCH, W / PATCH), each 2x2 block into channels."""
    b, c, f, h, w = z.shape
    z = z.reshape(b, c, f, h // PATCH, PATCH, w // PATCH, PATCH)
    return z.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c * PATCH * PATCH, f, h // PATCH, w // PATCH)


def from_patches(z: torch.Tensor) -> torch.Tensor:
    """The inverse of ``to_patches``."""
    b, cp, f, h, w = z.shape
    c = cp // (PATCH * PATCH)
    z = z.reshape(b, c, PATCH, PATCH, f, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return z.reshape(b, c, f, h * PATCH, w * PATCH)


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class SpaceTimeConv(nn.Module):
    """A (1, 3, 3) spatial convolution followed by a (3, 1, 1) temporal one."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.spatial = nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class ResBlock(nn.Module):
    """Norm, SiLU, conv; scale and shift from the sigma embedding; norm, SiLU, conv; plus a skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = SpaceTimeConv(c_in, c_out)
        self.film = nn.Linear(EMBED_DIM, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = SpaceTimeConv(c_out, c_out)
        nn.init.zeros_(self.conv2.temporal.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.temporal.bias)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(embedding)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class SpaceTimeAttention(nn.Module):
    """Self-attention over every (frame, row, column) position, with a learned position embedding."""

    def __init__(self, channels: int, tokens: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.position = nn.Parameter(torch.zeros(1, tokens, channels))
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2) + self.position
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, f, h, w)


class PhysicsVelocityNet(nn.Module):
    """v(z, sigma) ~ eps - x for latents z of shape (B, 1, F, H, W), sigma a float or a (B,) tensor."""

    def __init__(self, num_frames: int = 12, size: int = 16, channels: tuple[int, ...] = (32, 64)):
        super().__init__()
        if size % (PATCH * 2 ** (len(channels) - 1)):
            raise ValueError(f"size must be divisible by {PATCH * 2 ** (len(channels) - 1)}, got {size}")
        self.config = {"num_frames": num_frames, "size": size, "channels": list(channels)}
        self.register_buffer("frequencies", 2.0 ** torch.arange(8, dtype=torch.float32) * math.pi, persistent=False)
        self.embed = nn.Sequential(nn.Linear(16, EMBED_DIM), nn.SiLU(), nn.Linear(EMBED_DIM, EMBED_DIM))
        axes = [torch.linspace(-1, 1, n) for n in (num_frames, size // PATCH, size // PATCH)]
        self.register_buffer("coordinates", torch.stack(torch.meshgrid(*axes, indexing="ij"))[None], persistent=False)
        self.stem = nn.Conv3d(PATCH * PATCH + 3, channels[0], (1, 3, 3), padding=(0, 1, 1))
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, c in enumerate(channels):
            self.down.append(ResBlock(channels[max(level - 1, 0)] if level else c, c))
            if level < len(channels) - 1:
                self.downsample.append(nn.Conv3d(c, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        bottom = size // PATCH // 2 ** (len(channels) - 1)
        self.middle = ResBlock(channels[-1], channels[-1])
        self.attention = SpaceTimeAttention(channels[-1], num_frames * bottom * bottom)
        self.middle2 = ResBlock(channels[-1], channels[-1])
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels) - 1)):
            self.up.append(ResBlock(channels[level + 1] + channels[level], channels[level]))
        self.head = nn.Sequential(nn.GroupNorm(_groups(channels[0]), channels[0]), nn.SiLU(),
                                  nn.Conv3d(channels[0], PATCH * PATCH, (1, 3, 3), padding=(0, 1, 1)))

    def forward(self, z: torch.Tensor, sigma) -> torch.Tensor:
        batch = z.shape[0]
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device).reshape(-1).expand(batch)
        angles = sigma[:, None] * self.frequencies
        embedding = self.embed(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))
        x = self.stem(torch.cat([to_patches(z), self.coordinates.expand(batch, -1, -1, -1, -1)], dim=1))
        skips = []
        for level, block in enumerate(self.down):
            x = block(x, embedding)
            if level < len(self.downsample):
                skips.append(x)
                x = self.downsample[level](x)
        x = self.middle2(self.attention(self.middle(x, embedding)), embedding)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), embedding)
        return from_patches(self.head(x))


def save_weights(model: PhysicsVelocityNet, path: Path) -> Path:
    """Write the weights and the architecture settings (as metadata) to a safetensors file."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(model.config)})
    return path


def load_weights(path: Path = SHIPPED_WEIGHTS) -> PhysicsVelocityNet:
    """The network stored at ``path`` (default: the weights shipped in the package), in eval mode."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no physics weights at {path}; `python -m pnp_kernels.physics.train` trains them")
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    model = PhysicsVelocityNet(config["num_frames"], config["size"], tuple(config["channels"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
