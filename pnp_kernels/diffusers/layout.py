"""How a pipeline's latents map onto the P&P engine's (B, C, F, H, W) float32 state.

The uncertainty of P&P is a norm over channels at each position, so all the engine needs is which
axis holds the channels:

==========================  =====================  ==============================
pipeline latents            examples               engine view
==========================  =====================  ==============================
(B, C, F, H, W) video       Wan, HunyuanVideo 1.5  as is
(B, C, H, W) image          Cosmos text-to-image   (B, C, 1, H, W)
(B, N, C) packed tokens     LTX-2 video and audio  (B, C, N, 1, 1)
==========================  =====================  ==============================

Perturbation noise is drawn in the engine view, so for packed tokens one latent-shaped draw fills
(B, C, N) in that order.
"""
from __future__ import annotations

import torch


class LatentLayout:
    """Converts one pipeline's latents to the engine view and back (see the module docstring)."""

    def __init__(self, ndim: int):
        if ndim not in (3, 4, 5):
            raise ValueError(
                f"P&P handles latents of 5 dims (B, C, F, H, W), 4 dims (B, C, H, W) or 3 dims (B, N, C) packed "
                f"tokens; the pipeline passed {ndim} dims to scheduler.step"
            )
        self.ndim = ndim

    def to_engine(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.ndim:
            raise ValueError(f"scheduler.step got a {x.dim()}-dim tensor after {self.ndim}-dim latents")
        if self.ndim == 5:
            return x
        if self.ndim == 4:
            return x.unsqueeze(2)
        return x.transpose(1, 2)[..., None, None]

    def from_engine(self, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A new tensor in the pipeline's layout (never a view of the engine's buffers, which it reuses)."""
        if self.ndim == 4:
            z = z.squeeze(2)
        elif self.ndim == 3:
            z = z[..., 0, 0].transpose(1, 2)
        return z.to(dtype, memory_format=torch.contiguous_format, copy=True)
