"""The physics study's figures: paired differences per row, the model-quality curve, sample strips."""
from __future__ import annotations

from pathlib import Path

KIND_COLOURS = {"pnp": "tab:blue", "restart": "tab:orange", "broken": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def save_headline_figure(comparisons: list, path: Path) -> Path:
    """Each row's tracked and ballistic difference against matched Euler, with its interval
    (``comparisons``: report.Comparison)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 0.28 * len(comparisons) + 1.6), sharey=True, layout="constrained")
    labels = [c.row.label() for c in comparisons]
    for axis, name, unit in zip(axes, ("tracked", "ballistic"), ("share of clips", "px, clips tracked in both")):
        for y, c in enumerate(comparisons):
            interval = c.differences[name]
            axis.errorbar([interval.mean], [y], xerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                          fmt="o", color=KIND_COLOURS[c.row.kind], capsize=3)
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_xlabel(f"difference to Euler with the same calls ({unit})")
        axis.grid(alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0].invert_yaxis()
    figure.suptitle("physics study: P&P (blue), Restart (orange), broken control (red); simultaneous intervals", fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def save_curve_figure(curves: dict[tuple[str, str], list[tuple[float, float, float]]],
                      blank: list[tuple[float, float]], path: Path) -> Path:
    """Each curve row's tracked and ballistic difference, and Euler's blank rate, against the
    checkpoint's gate share of tracked clips. ``curves``: (row label, kind) -> (quality, Δ tracked,
    Δ ballistic) per checkpoint; ``blank``: (quality, Euler 20's blank rate) per checkpoint."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for (label, kind), points in curves.items():
        style = "-" if kind == "pnp" else "--"
        for axis, index in zip(axes[:2], (1, 2)):
            axis.plot([p[0] for p in points], [p[index] for p in points], style, marker="o", label=label)
    axes[2].plot([q for q, _ in blank], [b for _, b in blank], "k-", marker="x", label="Euler 20")
    for axis, title in zip(axes, ("Δ tracked vs matched Euler", "Δ ballistic (px) vs matched Euler", "blank rate")):
        axis.set_xlabel("model quality: gate share of tracked clips (Euler 20)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def save_sample_strips(rows: list[tuple[str, object]], path: Path, clips: int = 3) -> Path:
    """One labelled row of frames per (label, uint8 clips (B, F, H, W, 3)); the first ``clips`` clips
    side by side, every frame shown."""
    import numpy as np

    plt = _pyplot()
    figure, axes = plt.subplots(len(rows), clips, figsize=(4.2 * clips, 0.55 * len(rows) + 0.4),
                                squeeze=False, layout="constrained")
    for r, (label, frames) in enumerate(rows):
        for c in range(clips):
            strip = np.concatenate(list(frames[c]), axis=1)  # frames left to right
            axis = axes[r, c]
            axis.imshow(strip, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
            if r == 0:
                axis.set_title(f"clip {c}: frames 0 -> {frames.shape[1] - 1}", fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
