"""The fused update's cases as data, and the bytes each must move: the one home of that accounting.

Torch-free, so that the report reads it without a framework import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# (B, C, F, H, W) latents of one sample, B = 1 as the targets state them.
SHAPES = {
    "full": {
        "480p-c16": (1, 16, 21, 60, 104),   # Wan 2.1 / 2.2 14B, 480x832, 81 frames
        "720p-c16": (1, 16, 21, 90, 160),   # the same at 720x1280
        "480p-c48": (1, 48, 21, 30, 52),    # Wan 2.2 TI2V-5B at 480x832, 81 frames: H*W too short for vector loads
        "704p-c48": (1, 48, 31, 44, 80),    # Wan 2.2 TI2V-5B at its 704x1280, 121 frames
    },
    "tiny": {
        "tiny-c16": (1, 16, 3, 6, 10),
        "tiny-c48": (2, 48, 2, 5, 7),
    },
}


@dataclass(frozen=True)
class Variant:
    """Which optional inputs one update has; ``noise`` is "none", "tensor" or "philox"."""

    guidance: bool
    prev: bool
    noise: str

    @property
    def store_state(self) -> bool:
        """As the sampler sets it: x0 and the certain mask are written only when another iteration follows."""
        return self.noise != "none"

    @property
    def name(self) -> str:
        return f"{'guided' if self.guidance else 'unguided'}, {'prev' if self.prev else 'first'}, {self.noise} noise"


# The updates a guided refined run makes, most important first: a refined iteration (the targets'
# headline case), the same with philox noise, a plain Euler step, the first and last refined iterations.
HEADLINE = Variant(guidance=True, prev=True, noise="tensor")
SAMPLING_VARIANTS = (
    HEADLINE,
    Variant(True, True, "philox"),
    Variant(True, False, "none"),
    Variant(True, False, "tensor"),
    Variant(True, True, "none"),
)
ALL_VARIANTS = tuple(Variant(g, p, n) for g in (True, False) for p in (True, False) for n in ("tensor", "philox", "none"))


def bytes_moved(shape, variant: Variant, velocity_bytes: int = 2) -> int:
    """Fewest bytes one update must move through memory (each input read once, each output written once).

    With N latent elements and P = N / C mask positions:
      read   z 4N; v velocity_bytes*N (and v_uncond with guidance); with a previous iteration prev x0
             and prev z_next 8N and the prev certain mask P; explicit noise 4N (philox noise is computed);
      write  z_next 4N; with noise z_perturbed 4N, and x0 4N and the certain mask P (``store_state``).
    Per-sample outputs (certain fraction, non-finite count) are a few bytes and left out.
    """
    n = math.prod(shape)
    positions = n // shape[1]
    read = 4 * n + velocity_bytes * n * (2 if variant.guidance else 1)
    if variant.prev:
        read += 8 * n + positions
    if variant.noise == "tensor":
        read += 4 * n
    write = 4 * n
    if variant.noise != "none":
        write += 4 * n
    if variant.store_state:
        write += 4 * n + positions
    return read + write
