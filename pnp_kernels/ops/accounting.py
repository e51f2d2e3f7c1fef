"""Bytes one fused update must move, per sampler situation: the denominator of its achieved GB/s.

Every latent is read or written once (the kernels keep a position's channels in registers), so the
bytes are the sizes of the tensors the op reads and writes. The situations differ in what exists
and what anyone reads afterwards:

- plain step: an unrefined step; its x0 and certain mask are never read (store_state=False).
- first iteration: of a refined step; no previous state yet, noise for the next model input.
- refined iteration: a later iteration that another one follows (previous state, noise).
- last iteration: of a refined step; z_next is the step's result, x0 and the mask are not kept.

``always_store`` counts x0 and the mask as written in every situation: what ``store_state`` saves.
Philox noise is computed in the kernel (16 key bytes per sample); tensor noise is read.
prev_z_next is counted whole: the kernels read it only where a position takes the previous state,
so with a previous iteration the figure is an upper bound (exact when every position is certain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FLOAT32_BYTES = 4
MASK_BYTES = 1  # bool
STATS_BYTES = 4 + 4  # certain_fraction (float32) and nonfinite (int32) per sample
PHILOX_KEY_BYTES = 16  # two int64 words per sample


@dataclass(frozen=True)
class Situation:
    prev: bool  # a previous iteration's x0, z_next and certain mask are read
    noise: bool  # z_perturbed is written for a following iteration
    store_state: bool  # x0 and the certain mask are written for a following iteration


SITUATIONS = {
    "plain step": Situation(prev=False, noise=False, store_state=False),
    "first iteration": Situation(prev=False, noise=True, store_state=True),
    "refined iteration": Situation(prev=True, noise=True, store_state=True),
    "last iteration": Situation(prev=True, noise=False, store_state=False),
}


def bytes_moved(variant: str, shape, *, velocity_bytes: int = 2, guided: bool = False, noise: str = "philox",
                always_store: bool = False) -> int:
    """Bytes read plus written by one update in situation ``variant`` on latents of ``shape`` (B, C, F, H, W).

    velocity_bytes: 2 for bf16/fp16 model outputs, 4 for fp32; guided: v_uncond read as well (the
    guidance is fused); noise: "philox" or "tensor"; always_store: x0 and the mask written even where
    nobody reads them.
    """
    if variant not in SITUATIONS:
        raise ValueError(f"variant must be one of {tuple(SITUATIONS)}, got {variant!r}")
    if noise not in ("philox", "tensor"):
        raise ValueError(f"noise must be 'philox' or 'tensor', got {noise!r}")
    situation = SITUATIONS[variant]
    batch = shape[0]
    latent = math.prod(shape)  # elements
    mask = batch * math.prod(shape[2:])  # positions
    moved = FLOAT32_BYTES * latent * 2 + velocity_bytes * latent * (2 if guided else 1)  # z in, z_next out
    moved += STATS_BYTES * batch
    if situation.prev:
        moved += 2 * FLOAT32_BYTES * latent + MASK_BYTES * mask  # prev_x0, prev_z_next, prev_certain
    if situation.store_state or always_store:
        moved += FLOAT32_BYTES * latent + MASK_BYTES * mask  # x0, certain
    if situation.noise:
        moved += FLOAT32_BYTES * latent  # z_perturbed
        moved += FLOAT32_BYTES * latent if noise == "tensor" else PHILOX_KEY_BYTES * batch
    return moved


# Latent shapes of one sample: Wan 2.1 480p 81 frames (C=16) and Wan 2.2 TI2V-5B 480p 121 frames (C=48).
TABLE_SHAPES = {"Wan2.1 480p 81f": (1, 16, 21, 60, 104), "TI2V-5B 480p 121f": (1, 48, 31, 30, 52)}


def byte_table(shapes: dict[str, tuple] = TABLE_SHAPES) -> str:
    """Markdown table: MB one update moves with x0 and the mask always written and as the op moves them
    (what the situation needs), per situation, for bf16 guided velocities and philox noise."""
    lines = ["| shape | situation | x0 and mask always written (MB) | as the op moves them (MB) | saved |",
             "|---|---|---|---|---|"]
    for shape_name, shape in shapes.items():
        for variant in SITUATIONS:
            always = bytes_moved(variant, shape, guided=True, always_store=True)
            needed = bytes_moved(variant, shape, guided=True)
            lines.append(f"| {shape_name} | {variant} | {always / 1e6:.1f} | {needed / 1e6:.1f} | {1 - needed / always:.0%} |")
    return "\n".join(lines)
