"""Runs a set of variants on one dataset and lays the results out as a table."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .experiment import Variant, generate
from .metric import ManifoldMetric, ManifoldScore
from .model import VelocityMLP


@dataclass(frozen=True)
class Row:
    dataset: str
    group_steps: int  # N of the comparison this row belongs to
    variant: Variant
    nfe: int
    score: ManifoldScore
    change: float  # relative change of mean_nn vs Euler with N steps (-0.4 = 40% closer to the data)


def compare_at(dataset: str, model: VelocityMLP, metric: ManifoldMetric, noise: torch.Tensor,
               num_steps: int, refined: list[Variant], seed: int) -> tuple[list[Row], dict[Variant, torch.Tensor]]:
    """Euler with N steps (the baseline), Euler with 2N steps, then each P&P variant at N, all from the
    same starting noise. Returns the rows and the generated clouds by variant."""
    for variant in refined:
        if variant.num_steps != num_steps:
            raise ValueError(f"refined variants must use num_steps={num_steps}, got {variant}")
    clouds, rows = {}, []
    for variant in [Variant(num_steps), Variant(2 * num_steps), *refined]:
        points, nfe = generate(model, noise, variant, seed)
        score = metric.score(points)
        baseline = rows[0].score.mean_nn if rows else score.mean_nn
        clouds[variant] = points
        rows.append(Row(dataset, num_steps, variant, nfe, score, score.mean_nn / baseline - 1.0))
    return rows, clouds


HEADER = ("dataset", "N", "method", "steps", "P&P steps (sigma)", "K", "tau", "NFE", "mean NN", "vs Euler N", "far", "coverage NN")


def _cells(row: Row) -> tuple[str, ...]:
    v = row.variant
    where = f"{v.placement.first}-{v.placement.last} ({v.placement.sigma_high:.3g}..{v.placement.sigma_low:.3g})" if v.placement else "-"
    return (
        row.dataset,
        str(row.group_steps),
        f"P&P {v.placement.name}" if v.placement else "Euler",
        str(v.num_steps),
        where,
        str(v.iterations) if v.placement else "-",
        f"{v.tau:g}" if v.placement else "-",
        str(row.nfe),
        f"{row.score.mean_nn:.4f}",
        f"{100 * row.change:+.0f}%",
        f"{100 * row.score.far_fraction:.1f}%",
        f"{row.score.coverage_nn:.4f}",
    )


def format_table(rows: list[Row]) -> str:
    """A markdown table (aligned, so it also reads as plain text)."""
    body = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in body]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
