"""The study figure: each metric against model calls, Euler as a line, P&P as points."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import METRIC_NAMES

if TYPE_CHECKING:
    import numpy as np

PLACEMENT_COLOURS = {"early": "tab:blue", "middle": "tab:green", "late": "tab:orange"}
TAU_MARKERS = {0.0: "o", 0.25: "s"}


def save_study_figure(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    from .study import mean_ci

    names = [n for n in METRIC_NAMES if n != "background"]
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5), layout="constrained")
    for axis, name in zip(axes.flat, names):
        euler = sorted((r for r in result["rows"] if r["variant"]["placement"] is None), key=lambda r: r["planned_nfe"])
        stats = [mean_ci(r["metrics"][name]) for r in euler]
        axis.errorbar([r["planned_nfe"] for r in euler], [s[0] for s in stats], yerr=[s[1] for s in stats],
                      color="black", marker="x", capsize=3, label="Euler (N = model calls)")
        real = mean_ci(result["real"]["metrics"][name])[0]
        axis.axhline(real, color="grey", linestyle=":", label="real clips")
        for row in result["rows"]:
            variant = row["variant"]
            if variant["placement"] is None:
                continue
            mean, half, _ = mean_ci(row["metrics"][name])
            # Spread the points of one NFE a little so that their error bars do not overlap.
            offset = {"early": -0.3, "middle": 0.0, "late": 0.3}[variant["placement"]] + (0.1 if variant["tau"] else -0.1)
            if variant["broken"]:
                axis.errorbar(row["planned_nfe"] + offset, mean, yerr=half, color="red", marker="v", capsize=2,
                              label="negative control (noise x10)")
                continue
            axis.errorbar(row["planned_nfe"] + offset, mean, yerr=half, color=PLACEMENT_COLOURS[variant["placement"]],
                          marker=TAU_MARKERS[variant["tau"]], markersize=4, capsize=2, linestyle="none",
                          label=f"P&P {variant['placement']}, tau {variant['tau']:g}")
        axis.set_title(f"{name} ({'higher' if name == 'tracked' else 'lower'} is better)", fontsize=9)
        axis.set_xlabel("model calls per clip", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    figure.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=5, fontsize=8)
    figure.suptitle(f"P&P vs Euler at matched model calls, bouncing-ball model, {len(result['seeds'])} seeds "
                    f"(mean and 95% CI)", fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def save_sample_strips(rows: list[tuple[str, "np.ndarray"]], path: Path, clips: int = 3) -> Path:
    """One labelled row of frames per (label, uint8 clips (B, F, H, W, 3)); the first ``clips`` clips
    side by side, every frame shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
                axis.set_title(f"seed {c}: frames 0 -> {frames.shape[1] - 1}", fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
