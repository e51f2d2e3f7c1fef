"""Figures of the toy (matplotlib, drawn on a Figure object so no global backend is touched)."""
from __future__ import annotations

from pathlib import Path

import torch

from .experiment import PLACEMENTS
from .report import Row

DATA_STYLE = dict(s=2, c="0.75", linewidths=0)
COLOURS = {"euler": "tab:red", "refined": "tab:blue", **dict(zip(PLACEMENTS, ("tab:orange", "tab:green", "tab:blue", "tab:purple")))}


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # matplotlib is the optional "video" extra
        raise ImportError("the toy figures need matplotlib: pip install 'pnp-kernels[video]'") from error
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def draw_refinement(ax, data: torch.Tensor, euler: torch.Tensor, refined: torch.Tensor, title: str,
                    max_arrows: int = 300) -> None:
    """Data in grey, Euler samples in red, refined samples in blue, and an arrow from each of the
    first ``max_arrows`` samples' Euler position to its refined position (same starting noise)."""
    ax.scatter(data[:, 0], data[:, 1], label="data", **DATA_STYLE)
    ax.scatter(euler[:, 0], euler[:, 1], s=4, c=COLOURS["euler"], linewidths=0, label="Euler")
    ax.scatter(refined[:, 0], refined[:, 1], s=4, c=COLOURS["refined"], linewidths=0, label="P&P")
    shown = slice(0, max_arrows)
    delta = refined[shown] - euler[shown]
    ax.quiver(euler[shown, 0], euler[shown, 1], delta[:, 0], delta[:, 1], angles="xy", scale_units="xy",
              scale=1.0, width=0.0025, headwidth=4, headlength=5, color="0.2", alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)


def save_demo_figure(path: Path, panels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]]) -> Path:
    """One panel per dataset: (data, euler, refined, title)."""
    figure = _figure(5.5 * len(panels), 5.0)
    for ax, (data, euler, refined, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        draw_refinement(ax, data, euler, refined, title)
    figure.savefig(path)
    return path


def save_study_figure(path: Path, dataset: str, rows: list[Row], data: torch.Tensor,
                      euler: torch.Tensor, refined: torch.Tensor, refined_title: str) -> Path:
    """Left: mean NN distance against NFE for every row of ``dataset``; right: one refinement panel."""
    figure = _figure(12.0, 5.0)
    left, right = figure.subplots(1, 2)
    for row in rows:
        v = row.variant
        colour = COLOURS[v.placement.name] if v.placement else COLOURS["euler"]
        marker = ("o" if v.iterations == 1 else "s") if v.placement else "x"
        left.scatter(row.nfe, row.score.mean_nn, c=colour, marker=marker, alpha=0.5 if v.tau > 0 else 1.0)
    for name, colour in COLOURS.items():
        if name != "refined":
            left.scatter([], [], c=colour, label=name if name != "euler" else "Euler (N, 2N)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("model evaluations (NFE)")
    left.set_ylabel("mean distance to nearest data point")
    left.set_title(f"{dataset}: circles K=1, squares K=3, faint tau>0", fontsize=9)
    left.legend(fontsize=7)
    draw_refinement(right, data, euler, refined, refined_title)
    figure.savefig(path)
    return path
