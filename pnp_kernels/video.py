"""Video files and pictures made from sampled frames: mp4 export, labelled side-by-side comparisons, and
uncertainty heat maps that show where P&P found the model unsure (what ``pnp-sample`` writes).

Frames are numpy arrays of shape (F, H, W, 3), float in [0, 1] (diffusers' ``output_type="np"``, one
sample). Uncertainty maps are the sampler's ``PnPStats.uncertainty_maps`` entries, in latent resolution.
Heavy imports (imageio, PIL, matplotlib) happen inside the functions that need them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

# Most players and codecs want frame sides that are multiples of 16 (H.264 macroblocks); composed
# frames are padded to it so that the encoder never rescales them.
MACROBLOCK = 16
LABEL_HEIGHT = 16
HEATMAP_ALPHA = 0.55
COLORMAP = "inferno"


def check_frames(frames, name: str = "frames") -> np.ndarray:
    """Validate (F, H, W, 3) frames with values in [0, 1] and return them as float32."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(f"{name} must have shape (F, H, W, 3), got {frames.shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {frames.dtype}")
    if not np.isfinite(frames).all():
        raise ValueError(f"{name} holds NaN or Inf values")
    return np.clip(frames, 0.0, 1.0).astype(np.float32, copy=False)


def _check_fps(fps) -> int:
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    return fps


def export_video(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Write a sampled clip to an mp4 (H.264 through imageio-ffmpeg, frames padded to whole macroblocks)."""
    return stream_video([check_frames(frames)], path, fps)


def stream_video(chunks: Iterable[np.ndarray], path: str | Path, fps: int) -> Path:
    """Write a video chunk by chunk with imageio's ffmpeg writer, so that a composed video never sits in
    memory whole: the uncertainty video of a default run is 13 refined steps x 81 frames at 480p,
    gigabytes as float frames. Padding (not rescaling) keeps every pixel as sampled."""
    import imageio

    fps = _check_fps(fps)
    with imageio.get_writer(str(path), fps=fps, macro_block_size=MACROBLOCK) as writer:
        for chunk in chunks:
            chunk = pad_to_multiple(check_frames(chunk, "chunk"), MACROBLOCK)
            for frame in np.round(chunk * 255.0).astype(np.uint8):
                writer.append_data(frame)
    return Path(path)


def pad_to_multiple(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Pad height and width with black at the bottom and right up to a multiple of ``multiple``."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def label_strip(text: str, width: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """A (height, width, 3) black strip with ``text`` in white (clipped when the strip is narrow)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    top = max((height - (font.getbbox(text)[3] if text else 0)) // 2, 0)
    draw.text((2, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(strip, dtype=np.float32) / 255.0


def with_label(frames: np.ndarray, text: str) -> np.ndarray:
    """The frames with a label strip above them."""
    strip = label_strip(text, frames.shape[2])
    return np.concatenate([np.broadcast_to(strip, (frames.shape[0], *strip.shape)), frames], axis=1)


def side_by_side(columns: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """The clips left to right (two or more, e.g. ``baseline | P&P``), a label over each and a thin gap
    between them."""
    if len(columns) < 2 or len(labels) != len(columns):
        raise ValueError(f"side_by_side needs two or more clips and one label each, got {len(columns)} clips "
                         f"and labels {labels!r}")
    names = ["baseline"] + [f"columns[{i}]" for i in range(1, len(columns))]
    columns = [check_frames(c, name) for c, name in zip(columns, names)]
    for name, column in zip(names[1:], columns[1:]):
        if column.shape != columns[0].shape:
            raise ValueError(f"baseline and {name} frames differ in shape: {columns[0].shape} vs {column.shape}")
    gap = np.ones((columns[0].shape[0], columns[0].shape[1] + LABEL_HEIGHT, 2, 3), dtype=np.float32)
    parts = []
    for column, label in zip(columns, labels):
        parts += [gap, with_label(column, label)] if parts else [with_label(column, label)]
    return np.concatenate(parts, axis=2)


def latent_frame_index(num_frames: int, num_latent_frames: int) -> np.ndarray:
    """For each pixel frame, the latent frame that encodes it.

    Wan's causal VAE keeps frame 0 alone and packs each following group of ``r`` frames into one
    latent frame (r = 4), so pixel frame t belongs to latent frame ceil(t / r).
    """
    if num_latent_frames < 1 or num_frames < num_latent_frames:
        raise ValueError(f"cannot map {num_frames} frames onto {num_latent_frames} latent frames")
    if num_latent_frames == 1:
        return np.zeros(num_frames, dtype=np.int64)
    ratio = (num_frames - 1) / (num_latent_frames - 1)
    index = np.ceil(np.arange(num_frames) / ratio - 1e-9).astype(np.int64)
    return np.minimum(index, num_latent_frames - 1)


def to_pixels(latent_map: torch.Tensor, num_frames: int, height: int, width: int) -> np.ndarray:
    """Upsample one sample's (F_latent, h, w) map to (num_frames, height, width) (bilinear in space)."""
    if not isinstance(latent_map, torch.Tensor) or latent_map.dim() != 3:
        raise ValueError(f"latent_map must be a (F, H, W) tensor, got {getattr(latent_map, 'shape', latent_map)!r}")
    spatial = torch.nn.functional.interpolate(
        latent_map.float()[:, None], size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]
    return spatial.numpy()[latent_frame_index(num_frames, latent_map.shape[0])]


def heat_scale(maps: Sequence[dict], tau: float) -> float:
    """The uncertainty shown at full colour: the larger of 2 tau and the 99th percentile of all captured
    values, so that tau (the certain/uncertain threshold) sits at or below mid-scale and differences
    above it stay visible."""
    values = torch.cat([m["uncertainty"].flatten().float() for m in maps]) if maps else torch.zeros(1)
    top = float(torch.quantile(values[: 1 << 24], 0.99))  # quantile refuses inputs above 2**24 elements
    scale = max(2.0 * tau, top)
    return scale if scale > 0 else 1.0


def overlay_heat(frames: np.ndarray, heat: np.ndarray, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """Blend a colour-mapped heat map (values in [0, 1], shape (F, H, W)) over the frames."""
    from matplotlib import colormaps

    colors = colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3].astype(np.float32)
    return (1.0 - alpha) * frames + alpha * colors


def refined_steps(maps: Sequence[dict], sample: int = 0) -> list[dict]:
    """Group captured maps by step: for each refined step, the first iteration's uncertainty (the
    disagreement that decided what to refine) and the certain mask after the last iteration run."""
    by_step: dict[int, list[dict]] = {}
    for entry in maps:
        by_step.setdefault(int(entry["step"]), []).append(entry)
    steps = []
    for step in sorted(by_step):
        entries = sorted(by_step[step], key=lambda e: e["iteration"])
        certain = entries[-1]["certain"][sample]
        steps.append({
            "step": step,
            "sigma": float(entries[0]["sigma"]),
            "iterations": int(entries[-1]["iteration"]),
            "uncertainty": entries[0]["uncertainty"][sample],
            "certain": certain,
            "certain_fraction": float(certain.float().mean()),
        })
    return steps


def _step_title(step: dict) -> str:
    return (f"step {step['step']} sigma {step['sigma']:.2f}: {step['iterations']} it, "
            f"{100 * step['certain_fraction']:.0f}% certain")


def uncertainty_segments(frames: np.ndarray, maps: Sequence[dict], tau: float,
                         chunk_frames: int = 16) -> Iterator[np.ndarray]:
    """The uncertainty video, ``chunk_frames`` frames at a time: one labelled segment per refined step,
    the decoded video with that step's uncertainty over it."""
    frames = check_frames(frames)
    steps = refined_steps(maps)
    if not steps:
        raise ValueError("no uncertainty maps were captured (the plan refines no step)")
    num_frames, height, width, _ = frames.shape
    scale = heat_scale(maps, tau)
    for step in steps:
        heat = to_pixels(step["uncertainty"], num_frames, height, width) / scale
        title = _step_title(step)
        for start in range(0, num_frames, chunk_frames):
            part = slice(start, start + chunk_frames)
            yield with_label(overlay_heat(frames[part], heat[part]), title)


def _grid_colour_bars(figure, axes, heat_image, share_image, tau: float, scale: float) -> None:
    """The uncertainty grid's two colour bars: uncertainty (tau marked) under the frame columns, and the
    share still uncertain under the last column."""
    bar = figure.colorbar(heat_image, ax=axes[:, :-1], orientation="horizontal", fraction=0.05, aspect=40)
    bar.solids.set_alpha(1.0)
    bar.set_label("uncertainty: mean |x0 - previous x0| over channels", fontsize=7)
    if tau > 0:
        bar.ax.axvline(tau, color="cyan", linewidth=2)
        bar.ax.set_xticks([0.0, tau, scale], ["0", f"tau {tau:g}", f"{scale:.3g}"], fontsize=7)
    share_bar = figure.colorbar(share_image, ax=axes[:, -1], orientation="horizontal", fraction=0.05, aspect=12)
    share_bar.solids.set_alpha(1.0)
    share_bar.set_label("share of latent frames uncertain", fontsize=7)
    share_bar.ax.tick_params(labelsize=7)


def uncertainty_grid(frames: np.ndarray, maps: Sequence[dict], tau: float, path: str | Path,
                     max_columns: int = 4) -> Path:
    """A PNG summary: one row per refined step; columns show the step's uncertainty over a few
    frames, and a last column shows the share of latent frames still uncertain after the step's last
    iteration (the regions P&P kept re-predicting)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    frames = check_frames(frames)
    steps = refined_steps(maps)
    if not steps:
        raise ValueError("no uncertainty maps were captured (the plan refines no step)")
    num_frames, height, width, _ = frames.shape
    num_latent = steps[0]["uncertainty"].shape[0]
    shown_latent = sorted(set(np.linspace(0, num_latent - 1, min(max_columns, num_latent)).round().astype(int)))
    # The last pixel frame of each shown latent frame: the one most shaped by it.
    pixel_of = latent_frame_index(num_frames, num_latent)
    shown_pixel = [int(np.nonzero(pixel_of == f)[0][-1]) for f in shown_latent]
    scale = heat_scale(maps, tau)
    columns = len(shown_pixel) + 1
    aspect = height / width
    figure, axes = plt.subplots(
        len(steps), columns, figsize=(2.0 * columns + 0.6, 2.0 * aspect * len(steps) + 1.4), squeeze=False,
        layout="constrained",
    )
    heat_norm, share_norm = Normalize(0.0, scale), Normalize(0.0, 1.0)
    for row, step in enumerate(steps):
        heat = to_pixels(step["uncertainty"], num_frames, height, width)
        for col, t in enumerate(shown_pixel):
            axis = axes[row, col]
            axis.imshow(frames[t])
            heat_image = axis.imshow(heat[t], cmap=COLORMAP, norm=heat_norm, alpha=HEATMAP_ALPHA)
            if row == 0:
                axis.set_title(f"frame {t}", fontsize=8)
        still_uncertain = (~step["certain"]).float().mean(0, keepdim=True)
        share = to_pixels(still_uncertain, 1, height, width)[0]
        axis = axes[row, -1]
        axis.imshow(frames[shown_pixel[-1]].mean(-1), cmap="gray", vmin=0, vmax=1)
        share_image = axis.imshow(share, cmap="viridis", norm=share_norm, alpha=HEATMAP_ALPHA)
        if row == 0:
            axis.set_title("still uncertain", fontsize=8)
        axes[row, 0].set_ylabel(_step_title(step).replace(": ", "\n"), fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    _grid_colour_bars(figure, axes, heat_image, share_image, tau, scale)
    figure.suptitle("P&P uncertainty per refined step (first iteration)", fontsize=9)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def write_comparison(frames: np.ndarray, fps: int, path_for: Callable[[str], Path], *,
                     baseline: np.ndarray | None = None, labels: Sequence[str] = ("baseline", "P&P"),
                     between: Sequence[np.ndarray] = (), maps: Sequence[dict] | None = None, tau: float = 0.0,
                     chunk_frames: int = 16) -> list[str]:
    """Write one sampled clip and what compares it, each file to ``path_for(name)``: "video" (the clip);
    with ``baseline`` frames, "baseline" and "side_by_side" (baseline, the ``between`` clips, then the
    clip, labelled ``labels``); with uncertainty ``maps``, "uncertainty_video" and "uncertainty_grid".
    Returns the names written, in that order."""
    export_video(frames, path_for("video"), fps)
    written = ["video"]
    if baseline is not None:
        export_video(baseline, path_for("baseline"), fps)
        chunks = (side_by_side([c[i : i + chunk_frames] for c in (baseline, *between, frames)], labels)
                  for i in range(0, len(frames), chunk_frames))
        stream_video(chunks, path_for("side_by_side"), fps)
        written += ["baseline", "side_by_side"]
    if maps is not None:
        stream_video(uncertainty_segments(frames, maps, tau, chunk_frames), path_for("uncertainty_video"), fps)
        uncertainty_grid(frames, maps, tau, path_for("uncertainty_grid"))
        written += ["uncertainty_video", "uncertainty_grid"]
    return written
