"""Procedural physics clips: balls under gravity bouncing elastically off the floor, ceiling and walls.

Units are pixels and frames; y grows downwards (image rows), gravity pulls towards the floor. Balls do
not collide with each other (they pass through one another). Everything is vectorised over the batch
in numpy and deterministic from a seed: ``render_clips(simulate(n, rng))``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validators import check_int

NUM_FRAMES = 12
SIZE = 16  # frame height and width in pixels
GRAVITY = 0.5  # px / frame^2: a ball dropped from the top reaches the floor in ~7 frames
RADIUS_RANGE = (1.8, 3.0)
SPEED_X = 1.5  # |vx| <= SPEED_X px / frame
SPEED_Y = (-2.0, 1.0)  # initial vy range (negative = upwards)
SUBSTEPS = 8  # integration substeps per frame, so that a bounce happens close to the wall


@dataclass(frozen=True)
class Trajectories:
    """Ball centres (B, F, N, 2) as (y, x) in pixels, radii (B, N) and colours (B, N, 3) in [0, 1]."""

    centres: np.ndarray
    radii: np.ndarray
    colours: np.ndarray


def simulate(batch: int, rng: np.random.Generator, *, num_balls: int = 1, num_frames: int = NUM_FRAMES,
             size: int = SIZE, colour: bool = False) -> Trajectories:
    """Random balls (positions, velocities, radii, colours) and their trajectories over ``num_frames``."""
    batch = check_int("batch", batch, low=1)
    num_balls = check_int("num_balls", num_balls, low=1)
    num_frames = check_int("num_frames", num_frames, low=2)
    size = check_int("size", size, low=8)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    shape = (batch, num_balls)
    radii = rng.uniform(*RADIUS_RANGE, shape)
    position = np.stack([rng.uniform(radii, size - radii), rng.uniform(radii, size - radii)], axis=-1)
    velocity = np.stack([rng.uniform(*SPEED_Y, shape), rng.uniform(-SPEED_X, SPEED_X, shape)], axis=-1)
    colours = rng.uniform(0.35, 1.0, (*shape, 3)) if colour else np.ones((*shape, 3))
    accel = np.array([GRAVITY, 0.0])
    low, high = radii[..., None], size - radii[..., None]
    dt = 1.0 / SUBSTEPS
    centres = np.empty((batch, num_frames, num_balls, 2))
    centres[:, 0] = position
    for frame in range(1, num_frames):
        for _ in range(SUBSTEPS):
            # Exact constant-acceleration update, then mirror anything that crossed a wall (elastic).
            position = position + velocity * dt + 0.5 * accel * dt * dt
            velocity = velocity + accel * dt
            below, above = position < low, position > high
            position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
            velocity = np.where(below | above, -velocity, velocity)
        centres[:, frame] = position
    return Trajectories(centres, radii, colours)


def render_clips(trajectories: Trajectories, size: int = SIZE) -> np.ndarray:
    """Anti-aliased frames (B, F, size, size, 3) in [0, 1]: each pixel is covered by a ball in
    proportion to how far its centre lies inside the rim (a one-pixel linear ramp); overlapping balls
    take the brighter colour."""
    centres, radii = trajectories.centres, trajectories.radii
    grid = np.arange(size) + 0.5
    dy = grid[None, None, None, :, None] - centres[..., 0][..., None, None]  # (B, F, N, H, 1)
    dx = grid[None, None, None, None, :] - centres[..., 1][..., None, None]  # (B, F, N, 1, W)
    distance = np.sqrt(dy * dy + dx * dx)
    coverage = np.clip(radii[:, None, :, None, None] + 0.5 - distance, 0.0, 1.0)  # (B, F, N, H, W)
    colour = trajectories.colours[:, None, :, None, None, :]  # (B, 1, N, 1, 1, 3)
    return (coverage[..., None] * colour).max(axis=2).astype(np.float32)


def sample_clips(batch: int, seed: int, **kwargs) -> np.ndarray:
    """``batch`` rendered clips (B, F, H, W, 3), deterministic from ``seed``."""
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    size = kwargs.get("size", SIZE)
    return render_clips(simulate(batch, rng, **kwargs), size)
