"""Physics metrics of bouncing-ball clips, computed from the frames alone (no learned weights).

Per frame, balls are the connected components of the frame thresholded at half brightness. Each is
measured from its intensities: centroid, radius (from the total intensity, which for an anti-aliased
disc of radius r is pi r^2 + pi/12) and how far it is from an ideal disc. Balls are tracked from frame
to frame by nearest centroid. Per clip:

- tracked: one ball, and only one, is followed through every frame (the longest track spans the clip
  and no frame shows a second ball). A clip with a frame that shows no ball, or a ball that split, is
  not tracked.
- blank: no frame shows a ball. partly_blank: some frames, not all, show no ball.
- permanence: balls appearing, vanishing or splitting, per frame transition (track births + deaths;
  a ball that jumps further than ``MAX_JUMP`` counts as one death and one birth), plus one event for
  each frame that shows no ball, so a blank clip scores worst rather than perfect.
- ballistic: how far the main track is from constant acceleration between bounces: the median
  |third difference| of its centroid (px) over 4-frame windows with no bounce (a reversal at a wall).
- shape: mean L1 distance between each ball and the ideal disc of its centroid and radius, per unit
  of the ball's intensity.
- size: coefficient of variation of the main track's radius over time.
- flicker: mean |change of total frame intensity| between frames, per unit of mean intensity.
- background: mean intensity away from every ball (speckle, haze).

Every clip gets every metric. ``ballistic``, ``shape`` and ``size`` describe the ball of a tracked
clip and are NaN for a clip that is not tracked: that clip is already a failure in ``tracked``, and
reports compare these three on the clips tracked in both rows of a pair, showing how many
(``TRACKED_ONLY``). Real clips score ~0 on all but ``tracked`` (1); see tests/physics/test_metrics.py
for hand-made cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

THRESHOLD = 0.5  # brightness that counts as "ball"
MIN_AREA = 3  # pixels; smaller components are speckle, not balls
MAX_JUMP = 6.0  # px per frame; the fastest simulated ball moves ~4.3 px per frame
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
MIN_VELOCITY = 0.2  # px per frame; a velocity component smaller than this has no reliable sign
BOUNCE_MARGIN = 2.5  # px; a ball at 4.3 px per frame is sampled at most ~2.2 px from the wall it hits
RIM_AREA = math.pi / 12  # what the one-pixel anti-aliasing ramp adds to pi r^2


@dataclass(frozen=True)
class Ball:
    y: float
    x: float
    radius: float
    shape_error: float


@dataclass(frozen=True)
class ClipMetrics:
    tracked: float  # 1.0 if the longest track spans every frame, each with one ball, else 0.0
    blank: float  # 1.0 if no frame shows a ball
    partly_blank: float  # 1.0 if some frames, but not all, show no ball
    permanence: float
    ballistic: float  # NaN unless tracked (or with no 4-frame window free of bounces)
    shape: float  # NaN unless tracked
    size: float  # NaN unless tracked
    flicker: float
    background: float


METRIC_NAMES = tuple(f.name for f in fields(ClipMetrics))
TRACKED_ONLY = ("ballistic", "shape", "size")
DIRECTIONS = {name: "higher" if name == "tracked" else "lower" for name in METRIC_NAMES}  # which way is better


def to_grey(frames: np.ndarray) -> np.ndarray:
    """Frames (F, H, W, 3) or (F, H, W), uint8 or float in [0, 1] -> float64 (F, H, W) in [0, 1]."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim == 4 and frames.shape[-1] == 3:
        frames = frames.mean(axis=-1, dtype=np.float64) if frames.dtype != np.uint8 else frames.mean(axis=-1) / 255.0
    elif frames.ndim == 3:
        frames = frames / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float64)
    else:
        raise ValueError(f"frames must have shape (F, H, W, 3) or (F, H, W), got {frames.shape}")
    if frames.shape[0] < 2 or not np.isfinite(frames).all():
        raise ValueError(f"frames must hold at least 2 finite frames, got shape {frames.shape}")
    return np.clip(frames, 0.0, 1.0)


def disc(height: int, width: int, y: float, x: float, radius: float) -> np.ndarray:
    """An anti-aliased disc as the clip renderer draws it (a one-pixel linear ramp at the rim)."""
    rows, cols = np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5
    return np.clip(radius + 0.5 - np.hypot(rows - y, cols - x), 0.0, 1.0)


def find_balls(frame: np.ndarray) -> tuple[list[Ball], np.ndarray]:
    """The balls of one grey frame and the mask of pixels that belong to them (rims included)."""
    labels, count = ndimage.label(frame > THRESHOLD, structure=EIGHT_NEIGHBOURS)
    balls, covered = [], np.zeros(frame.shape, dtype=bool)
    for index in range(1, count + 1):
        component = labels == index
        if component.sum() < MIN_AREA:
            continue
        # The rim pixels below the threshold belong to the ball too; those of another ball do not.
        region = ndimage.binary_dilation(component, structure=EIGHT_NEIGHBOURS) & ((labels == 0) | component)
        covered |= region
        weights = frame * region
        mass = weights.sum()
        rows, cols = np.nonzero(region)
        y = float((weights[rows, cols] * (rows + 0.5)).sum() / mass)
        x = float((weights[rows, cols] * (cols + 0.5)).sum() / mass)
        radius = math.sqrt(max(mass - RIM_AREA, 0.0) / math.pi)
        ideal = disc(*frame.shape, y, x, radius)
        error = float(np.abs(frame - ideal)[region | (ideal > 0)].sum() / mass)
        balls.append(Ball(y, x, radius, error))
    return balls, covered


def track(balls_per_frame: list[list[Ball]]) -> tuple[list[list[Ball]], int]:
    """Greedy nearest-centroid tracking; returns the tracks and the number of births + deaths after
    the first frame."""
    tracks: list[list[Ball]] = [[b] for b in balls_per_frame[0]]
    active = list(range(len(tracks)))
    events = 0
    for balls in balls_per_frame[1:]:
        pairs = sorted(
            (math.hypot(tracks[t][-1].y - b.y, tracks[t][-1].x - b.x), t, i)
            for t in active for i, b in enumerate(balls)
        )
        matched_tracks, matched_balls, next_active = set(), set(), []
        for distance, t, i in pairs:
            if distance <= MAX_JUMP and t not in matched_tracks and i not in matched_balls:
                matched_tracks.add(t)
                matched_balls.add(i)
                tracks[t].append(balls[i])
                next_active.append(t)
        events += len(active) - len(matched_tracks)  # deaths
        for i, b in enumerate(balls):
            if i not in matched_balls:  # births
                events += 1
                tracks.append([b])
                next_active.append(len(tracks) - 1)
        active = next_active
    return tracks, events


def ballistic_residual(positions: np.ndarray, radius: float, height: int, width: int) -> float:
    """Median |third difference| (px) of a (T, 2) track of (y, x) over 4-frame windows without a bounce.

    Constant acceleration makes the third difference zero. A window holds a bounce when, with the ball
    within ``BOUNCE_MARGIN`` of a wall, its velocity towards that wall turns away from it. Velocity
    reversals away from the walls (jitter) are not bounces and count against the clip."""
    if len(positions) < 4:
        return math.nan
    velocity = np.diff(positions, axis=0)
    low, high = positions - radius < BOUNCE_MARGIN, positions + radius > np.array([height, width]) - BOUNCE_MARGIN
    # bounce[t]: the ball turned back from a wall at position t + 1 (between velocities t and t + 1).
    towards_high, towards_low = velocity[:-1] > MIN_VELOCITY, velocity[:-1] < -MIN_VELOCITY
    away_high, away_low = velocity[1:] < -MIN_VELOCITY, velocity[1:] > MIN_VELOCITY
    bounce = ((towards_high & away_high & high[1:-1]) | (towards_low & away_low & low[1:-1])).any(axis=1)
    residuals = []
    for t in range(len(positions) - 3):
        if bounce[t] or bounce[t + 1]:
            continue
        third = positions[t + 3] - 3 * positions[t + 2] + 3 * positions[t + 1] - positions[t]
        residuals.append(float(np.hypot(*third)))
    return float(np.median(residuals)) if residuals else math.nan


def clip_metrics(frames: np.ndarray) -> ClipMetrics:
    """All metrics of one clip (F, H, W, 3) or (F, H, W)."""
    grey = to_grey(frames)
    found = [find_balls(frame) for frame in grey]
    balls_per_frame = [balls for balls, _ in found]
    tracks, events = track(balls_per_frame)
    empty_frames = sum(not balls for balls in balls_per_frame)
    main = max(tracks, key=len) if tracks else []
    tracked = len(main) == len(grey) and all(len(balls) == 1 for balls in balls_per_frame)
    radii = np.array([b.radius for b in main])
    totals = grey.sum(axis=(1, 2))
    away = ~np.stack([covered for _, covered in found])
    shape = size = ballistic = math.nan
    if tracked:
        shape = float(np.mean([b.shape_error for balls in balls_per_frame for b in balls]))
        size = float(radii.std() / radii.mean())
        ballistic = ballistic_residual(np.array([(b.y, b.x) for b in main]), float(radii.mean()), *grey.shape[1:])
    return ClipMetrics(
        tracked=float(tracked),
        blank=float(empty_frames == len(grey)),
        partly_blank=float(0 < empty_frames < len(grey)),
        permanence=(events + empty_frames) / (len(grey) - 1),
        ballistic=ballistic,
        shape=shape,
        size=size,
        flicker=float(np.abs(np.diff(totals)).mean() / max(totals.mean(), 1e-9)),
        background=float(grey[away].mean()) if away.any() else 0.0,
    )


def batch_metrics(clips: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of every clip in (B, F, H, W, 3): name -> (B,) array (``TRACKED_ONLY`` NaN where not tracked)."""
    if not isinstance(clips, np.ndarray) or clips.ndim not in (4, 5):
        raise ValueError(f"clips must be a (B, F, H, W, 3) or (B, F, H, W) array, got {getattr(clips, 'shape', clips)!r}")
    per_clip = [clip_metrics(clip) for clip in clips]
    return {name: np.array([getattr(m, name) for m in per_clip]) for name in METRIC_NAMES}
