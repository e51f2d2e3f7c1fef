"""ComfyUI's latents as the P&P engine's (B, C, F, H, W) views, one per modality (docs/COMFYUI.md).

A plain latent reaches a sampler in its own shape: (B, C, F, H, W) video, (B, C, H, W) image or
(B, C, L) sequence. Joint models (LTX-2's video and audio) reach it packed: every modality flattened
to (B, 1, n_m) and concatenated along the last axis, with the modalities' shapes on the model as
``latent_shapes``. Each modality gets its own engine, so its uncertainty is a norm over its own
channels and its certain mask, early exit and noise are its own.
"""
from __future__ import annotations

import math

import torch


def engine_shape(shape) -> tuple[int, ...]:
    """The engine view of one modality's (B, C, ...) shape: channels stay on axis 1."""
    shape = tuple(int(n) for n in shape)
    if len(shape) == 5:
        return shape
    if len(shape) == 4:  # an image is one frame
        return (shape[0], shape[1], 1, shape[2], shape[3])
    if len(shape) == 3:  # a sequence is a column of frames
        return (*shape, 1, 1)
    raise ValueError(
        f"P&P handles latents of 3 to 5 dims (B, C, ...), got a latent of shape {shape}"
    )


class Modalities:
    """Splits what the sampler is given into per-modality engine views, and joins them back."""

    def __init__(self, x: torch.Tensor, latent_shapes):
        self.shape = tuple(x.shape)
        if latent_shapes is None or len(latent_shapes) <= 1:
            self.views = [engine_shape(x.shape)]
            self.packed = False
            return
        sizes = [math.prod(int(n) for n in shape[1:]) for shape in latent_shapes]
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != sum(sizes):
            raise ValueError(
                f"the model names {len(latent_shapes)} packed latents of shapes {[tuple(s) for s in latent_shapes]} "
                f"({sum(sizes)} values per sample), but the sampler was given a tensor of shape {self.shape}"
            )
        self.views = [engine_shape((x.shape[0], *tuple(shape)[1:])) for shape in latent_shapes]
        self.sizes = sizes
        self.packed = True

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Engine views of ``x`` (views where the memory allows, else copies)."""
        if not self.packed:
            return [x.reshape(self.views[0])]
        parts = torch.split(x, self.sizes, dim=2)
        return [part.reshape(view) for part, view in zip(parts, self.views)]

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The engine views in the sampler's layout (a view of the one part when nothing is packed)."""
        batch = self.shape[0]
        if not self.packed:
            return parts[0].reshape(self.shape)
        return torch.cat([part.reshape(batch, 1, -1) for part in parts], dim=2)
