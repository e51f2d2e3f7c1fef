"""Video metrics that need no model weights: optical flow (OpenCV Farneback), colour and sharpness
statistics (OpenCV, numpy). Definitions, units and directions are in docs/EVAL.md.

Every clip is a numpy uint8 array (F, H, W, 3), RGB. Each metric maps one clip to one number; the
paired metrics (``frame_change``) compare a P&P clip with the baseline clip from the same noise. The
drift of a metric against the baseline (e.g. the over-saturation P&P can cause) is the paired
difference of its per-clip values, summarised in ``report`` with ``pnp_kernels.statistics``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# Farneback settings (OpenCV's documented example values): a 3-level pyramid halving each level,
# 15-pixel averaging window, 3 iterations, polynomial expansion over 5 pixels with sigma 1.2.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)

# A clip whose flicker exceeds this is flagged in the report: the mean brightness jumps back and forth
# by about 0.75% of the full range from frame to frame (a smooth fade or a steady drift scores 0).
FLICKER_FLAG = 0.03


@dataclass(frozen=True)
class Metric:
    """One per-clip number: its name, what it measures, and which direction is better."""

    name: str
    direction: str  # "higher", "lower" or "neutral" (better when higher / lower; neither)
    unit: str
    description: str
    compute: Callable[[np.ndarray], float] | None = None  # None: from the baseline pair or the P&P statistics


def check_clip(clip, name: str = "clip") -> np.ndarray:
    """A uint8 RGB clip (F, H, W, 3) with at least one frame."""
    if not isinstance(clip, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(clip).__name__}")
    if clip.dtype != np.uint8:
        raise TypeError(f"{name} must hold uint8 RGB values, got dtype {clip.dtype}")
    if clip.ndim != 4 or clip.shape[-1] != 3 or min(clip.shape[:3]) < 1:
        raise ValueError(f"{name} must have shape (F, H, W, 3), got {clip.shape}")
    return clip


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (diffusers' ``output_type="np"``) as uint8; uint8 frames unchanged."""
    if frames.dtype == np.uint8:
        return frames
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def _grey(clip: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip])


def _flow(from_grey: np.ndarray, to_grey: np.ndarray) -> np.ndarray:
    """(H, W, 2) displacement, in pixels, from each pixel of ``from_grey`` to where it is in ``to_grey``."""
    return cv2.calcOpticalFlowFarneback(from_grey, to_grey, None, **FARNEBACK)


def motion_magnitude(clip: np.ndarray) -> float:
    """Mean optical-flow length between consecutive frames, in pixels per frame (0 for one frame)."""
    grey = _grey(check_clip(clip))
    lengths = [np.linalg.norm(_flow(a, b), axis=-1).mean() for a, b in zip(grey[:-1], grey[1:])]
    return float(np.mean(lengths)) if lengths else 0.0


def warp_error(clip: np.ndarray) -> float:
    """Mean absolute RGB difference (0..1) between each frame and the previous frame warped onto it
    by the optical flow; pixels whose flow points outside the previous frame are left out."""
    clip = check_clip(clip)
    grey = _grey(clip)
    height, width = grey.shape[1:]
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    errors = []
    for t in range(1, len(clip)):
        back = _flow(grey[t], grey[t - 1])  # where each pixel of frame t was in frame t - 1
        map_x, map_y = columns + back[..., 0], rows + back[..., 1]
        warped = cv2.remap(clip[t - 1], map_x, map_y, cv2.INTER_LINEAR)
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        if inside.any():
            difference = np.abs(clip[t].astype(np.float32) - warped.astype(np.float32)) / 255.0
            errors.append(difference[inside].mean())
    return float(np.mean(errors)) if errors else 0.0


def flicker(clip: np.ndarray) -> float:
    """Mean absolute second difference over time of the mean brightness (0..1 scale): brightness that
    jumps back and forth. Linear fades score 0. NaN for clips of fewer than 3 frames."""
    brightness = _grey(check_clip(clip)).reshape(len(clip), -1).mean(axis=1) / 255.0
    if len(brightness) < 3:
        return float("nan")
    return float(np.abs(np.diff(brightness, n=2)).mean())


def saturation(clip: np.ndarray) -> float:
    """Mean HSV saturation (max - min) / max over all pixels, 0..1."""
    clip = check_clip(clip)
    return float(np.mean([cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)[..., 1].mean() for frame in clip]) / 255.0)


def contrast(clip: np.ndarray) -> float:
    """RMS contrast: standard deviation of the brightness (0..1) within a frame, averaged over frames."""
    grey = _grey(check_clip(clip)).astype(np.float64) / 255.0
    return float(grey.reshape(len(grey), -1).std(axis=1).mean())


def sharpness(clip: np.ndarray) -> float:
    """Variance of the Laplacian of the brightness (0..255 scale), averaged over frames."""
    grey = _grey(check_clip(clip))
    return float(np.mean([cv2.Laplacian(frame, cv2.CV_64F).var() for frame in grey]))


def frame_change(clip: np.ndarray, baseline: np.ndarray) -> float:
    """Mean absolute RGB difference (0..1) between a clip and the baseline clip from the same noise."""
    clip, baseline = check_clip(clip), check_clip(baseline, "baseline")
    if clip.shape != baseline.shape:
        raise ValueError(f"clip and baseline must have the same shape, got {clip.shape} and {baseline.shape}")
    return float(np.abs(clip.astype(np.float32) - baseline.astype(np.float32)).mean() / 255.0)


def refined_share(certain_fractions: list[list[float]]) -> float:
    """Share of the latent that P&P re-predicted, averaged over every P&P iteration of one sample:
    1 - the certain (frozen) fraction. ``certain_fractions`` holds each refined step's per-iteration
    fractions for this sample; 0 when nothing was refined (the baseline)."""
    fractions = [f for step in certain_fractions for f in step]
    return float(1.0 - np.mean(fractions)) if fractions else 0.0


CLIP_METRICS = (
    Metric("motion", "neutral", "px/frame", "dynamic degree: mean optical-flow length between consecutive frames",
           motion_magnitude),
    Metric("warp_error", "lower", "0..1", "temporal consistency: error of each frame against the previous frame "
           "warped onto it by the optical flow", warp_error),
    Metric("flicker", "lower", "0..1", "mean absolute second difference over time of the mean brightness", flicker),
    Metric("saturation", "neutral", "0..1", "mean HSV saturation; a rise against the baseline is over-saturation",
           saturation),
    Metric("contrast", "neutral", "0..1", "RMS contrast (std of brightness within a frame)", contrast),
    Metric("sharpness", "higher", "var", "variance of the Laplacian of the brightness (noise raises it too)",
           sharpness),
)
PAIRED_METRICS = (
    Metric("frame_change", "neutral", "0..1", "mean absolute RGB difference from the baseline clip", None),
    Metric("refined_share", "neutral", "0..1", "share of the latent each P&P iteration re-predicted "
           "(1 - certain fraction)", None),
)
REPORTED_METRICS = CLIP_METRICS + PAIRED_METRICS


def clip_metrics(clip: np.ndarray) -> dict[str, float]:
    """Every weight-free per-clip metric of one clip."""
    return {metric.name: metric.compute(clip) for metric in CLIP_METRICS}
