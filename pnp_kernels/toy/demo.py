"""The 2-D toy demo behind ``pnp-sample --demo toy``: P&P on the shipped toy models, no weights to fetch.

Euler with N steps, Euler with 2N steps, and P&P at the same N placed late (low sigma, the paper's
t near 1) and early (high sigma), on every shipped dataset; prints the table and writes one PNG.
"""
from __future__ import annotations

import numbers
import time
from pathlib import Path

from ..threads import single_thread
from .data import DATASETS, sample_data
from .experiment import Variant, initial_noise, placement
from .metric import REFERENCE_SIZE, ManifoldMetric
from .model import load_shipped
from .plots import save_demo_figure
from .report import compare_at, format_table

DEMO_STEPS = 8
DEMO_POINTS = 2000
DEMO_ITERATIONS = 3
FIGURE_NAME = "pnp_toy_demo.png"


def demo_variants(num_steps: int = DEMO_STEPS) -> tuple[Variant, ...]:
    """The P&P rows of the demo; the first is the one drawn (late, K=3, tau 0 = Algorithm 1)."""
    late, early = placement("late", num_steps), placement("early", num_steps)
    return (
        Variant(num_steps, late, DEMO_ITERATIONS),
        Variant(num_steps, late, 1),
        Variant(num_steps, early, DEMO_ITERATIONS),
    )


def run_demo(out_dir: Path, seed: int = 0) -> tuple[str, Path]:
    """Run the toy comparison on the shipped weights; returns (table text, path of the PNG written)."""
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir must be a pathlib.Path, got {out_dir!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with single_thread():
        return _demo(out_dir, int(seed))


def _demo(out_dir: Path, seed: int) -> tuple[str, Path]:
    started = time.perf_counter()
    shown = demo_variants()[0]
    rows, panels = [], []
    for name in DATASETS:
        metric = ManifoldMetric(name)
        dataset_rows, clouds = compare_at(
            name, load_shipped(name), metric, initial_noise(DEMO_POINTS, seed), DEMO_STEPS,
            list(demo_variants()), seed + 1,
        )
        rows += dataset_rows
        shown_row = next(r for r in dataset_rows if r.variant == shown)
        panels.append((
            sample_data(name, DEMO_POINTS, seed + 2), clouds[Variant(DEMO_STEPS)], clouds[shown],
            f"{name}: Euler {DEMO_STEPS} steps (red) -> P&P {shown.placement.describe()}, K={shown.iterations} (blue)\n"
            f"mean NN distance {shown_row.change * 100:+.0f}% vs Euler",
        ))
    figure = save_demo_figure(out_dir / FIGURE_NAME, panels)
    table = "\n".join([
        f"P&P on a 2-D flow-matching toy: {DEMO_POINTS} samples per dataset, shipped weights, seed {seed}.",
        f"mean NN = mean distance from each sample to the nearest of {REFERENCE_SIZE:,} fresh data points (lower = closer",
        "to the data); far = share of samples beyond the dataset's threshold; coverage NN = mean distance from",
        "data points to the nearest sample (higher = parts of the data left uncovered). Sigma 1 = noise.",
        "",
        format_table(rows),
        "",
        f"demo took {time.perf_counter() - started:.1f}s",
    ])
    return table, figure
