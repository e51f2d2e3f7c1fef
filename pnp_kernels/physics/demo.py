"""The physics video demo: three ways to sample the shipped bouncing-ball model from the same noise.

Columns (docs/PHYSICS_STUDY.md says how each fares on 512 held-out seeds):
1. Euler with as many model calls as column 3 (the fair baseline);
2. P&P with the paper's placement: the ``published`` preset (its 50-step plan as fractions of the
   run) with tau 0.25, the paper's setting;
3. P&P with the placement the pre-registered study rule selected (``SELECTED_PLAN``), or the
   ``--plan`` the user gives.
``run_demo(out_dir)`` writes, all or nothing: demo.mp4 (column 3), demo_baseline.mp4 (column 1),
demo_side_by_side.mp4 (all three, labelled), demo_uncertainty.mp4 / .png (where column 3's P&P found
the model unsure) and demo.json (settings, model calls and every physics metric of each column).
Clips are tiled into one grid and enlarged (nearest neighbour) so the 16-pixel frames are watchable.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import PnPConfig, RefinePlan
from ..staging import StagedFiles
from ..validators import check_bool, check_int
from ..video import write_comparison
from .generate import DEFAULT_STEPS, GeneratedClips, generate, sigma_grid
from .metrics import METRIC_NAMES, batch_metrics
from .model import SHIPPED_WEIGHTS
from .seeds import demo_seeds

GRID_ROWS, GRID_COLUMNS = 2, 4
UPSCALE = 6  # 16 px -> 96 px per clip
FPS = 6
PAPER_PLAN, PAPER_TAU = "published", 0.25
# The placement the pre-registered rule of docs/PHYSICS_PREREG.md selects from the headline rows
# (docs/PHYSICS_STUDY.md says which row and why), not picked by eye.
SELECTED_PLAN, SELECTED_TAU = "s0.30-0.05:1", 0.0  # late K=1
# video.write_comparison's files under the names pnp-sample gives them for --out demo.mp4.
VIDEO_FILES = {"video": "demo.mp4", "baseline": "demo_baseline.mp4", "side_by_side": "demo_side_by_side.mp4",
               "uncertainty_video": "demo_uncertainty.mp4", "uncertainty_grid": "demo_uncertainty.png"}
FILES = (*VIDEO_FILES.values(), "demo.json")


@dataclass(frozen=True)
class Column:
    name: str
    plan: RefinePlan  # resolved on the demo's grid (empty for Euler)
    tau: float
    num_steps: int

    def config(self) -> PnPConfig | None:
        return PnPConfig(plan=self.plan, tau=self.tau, noise="philox") if self.plan else None

    def describe(self, sigmas: torch.Tensor) -> str:
        if not self.plan:
            return f"{self.name}: plain Euler, {self.num_steps} steps"
        first, last = self.plan.ranges[0][0], self.plan.ranges[-1][1]
        return (f"{self.name}: refines steps {self.plan} (sigma {sigmas[first]:.2f} to {sigmas[last]:.2f}) "
                f"of {self.num_steps}, tau {self.tau:g}")


def paper_plan(steps: int) -> RefinePlan:
    """The paper's placement resolved on the demo's ``steps``-step grid."""
    return RefinePlan.parse(PAPER_PLAN).resolve(sigma_grid(steps))


def columns(steps: int, plan: str | None) -> list[Column]:
    """Euler matched to column 3's calls, the paper's placement, and the selected (or given) plan."""
    sigmas = sigma_grid(steps)
    selected = RefinePlan.parse(SELECTED_PLAN if plan is None else plan).resolve(sigmas)
    if not selected:
        raise ValueError(f"plan {plan!r} refines no step of a {steps}-step run; the demo compares P&P with Euler")
    paper = paper_plan(steps)
    third = "P&P, selected placement" if plan is None else "P&P, your plan"
    calls = steps + selected.extra_nfe(steps)
    return [Column("Euler, same calls as column 3", RefinePlan(()), 0.0, calls),
            Column("P&P, the paper's placement", paper, PAPER_TAU, steps),
            Column(third, selected, SELECTED_TAU if plan is None else PAPER_TAU, steps)]


def tile(clips: np.ndarray, upscale: int = UPSCALE) -> np.ndarray:
    """(B, F, H, W, ...) with B = rows x columns -> (F, rows H, columns W, ...), enlarged ``upscale`` x."""
    b, f, h, w = clips.shape[:4]
    grid = clips.reshape(GRID_ROWS, GRID_COLUMNS, f, h, w, *clips.shape[4:])
    grid = np.moveaxis(grid, 2, 0)  # (F, rows, columns, H, W, ...)
    grid = np.swapaxes(grid, 2, 3).reshape(f, GRID_ROWS * h, GRID_COLUMNS * w, *clips.shape[4:])
    return grid.repeat(upscale, axis=1).repeat(upscale, axis=2)


def tiled_maps(maps: list[dict]) -> list[dict]:
    """The sampler's uncertainty maps with the batch tiled like the frames (one sample), so that the
    project's heat-map writers draw the whole grid; kept at latent resolution (they upsample)."""
    tiled = []
    for entry in maps:
        grid = {key: torch.from_numpy(tile(entry[key].numpy(), upscale=1)[None]) for key in ("uncertainty", "certain")}
        tiled.append({**entry, **grid})
    return tiled


def summarise(column: Column, clips: GeneratedClips, sigmas: torch.Tensor) -> dict:
    metrics = batch_metrics(clips.frames)
    return {
        "name": column.name, "description": column.describe(sigmas), "plan": str(column.plan), "tau": column.tau,
        "num_steps": column.num_steps, "calls_per_clip": float(np.mean(clips.stats.nfe_per_sample)),
        "metrics_mean": {name: float(np.nanmean(v)) if np.isfinite(v).any() else None for name, v in metrics.items()},
        "metrics_per_clip": {name: [None if not np.isfinite(x) else float(x) for x in v] for name, v in metrics.items()},
    }


def run_demo(out_dir: Path, *, seed: int = 0, steps: int | None = None, plan: str | None = None,
             progress: bool = True) -> dict:
    """Sample, write the six demo files into ``out_dir`` (all or none) and return the demo.json record."""
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir must be a pathlib.Path, got {out_dir!r} ({type(out_dir).__name__})")
    count = GRID_ROWS * GRID_COLUMNS
    seed = check_int("seed", seed, low=0, high=(2**24 - count) // count)
    steps = DEFAULT_STEPS if steps is None else check_int("steps", steps, low=4)
    if plan is not None and not isinstance(plan, str):
        raise TypeError(f"plan must be a string such as '1-3:3' or None, got {plan!r}")
    check_bool("progress", progress)
    started = time.perf_counter()
    sigmas = sigma_grid(steps)
    chosen = columns(steps, plan)
    seeds = demo_seeds(count, seed * count)
    sampled = [generate(seeds, c.config(), num_steps=c.num_steps, capture_uncertainty=i == 2, progress=progress)
               for i, c in enumerate(chosen)]
    record = {
        "model": SHIPPED_WEIGHTS.name, "seeds": seeds, "num_steps": steps,
        "noise": "initial noise torch.Generator().manual_seed(clip seed); P&P noise philox from the clip seed",
        "grid": [GRID_ROWS, GRID_COLUMNS], "upscale": UPSCALE, "fps": FPS,
        "columns": [summarise(c, s, sigmas) for c, s in zip(chosen, sampled)], "files": list(FILES),
        "sampling_seconds": time.perf_counter() - started,
    }
    with StagedFiles() as staged:
        _write_files(staged, Path(out_dir), sampled, record)
        staged.commit()
    print(format_summary(record, plan is None))
    print(f"sampled and wrote {', '.join(FILES)} in {time.perf_counter() - started:.1f}s")
    return record


def _write_files(staged: StagedFiles, out_dir: Path, sampled: list[GeneratedClips], record: dict) -> None:
    frames = [tile(s.frames).astype(np.float32) / 255.0 for s in sampled]
    labels = [f"{i + 1}. {c['name']} ({c['calls_per_clip']:g} calls)" for i, c in enumerate(record["columns"])]
    paths = {name: staged.path_for(out_dir / file) for name, file in VIDEO_FILES.items()}
    write_comparison(frames[2], FPS, paths.__getitem__, baseline=frames[0], between=frames[1:2], labels=labels,
                     maps=tiled_maps(sampled[2].stats.uncertainty_maps), tau=record["columns"][2]["tau"])
    staged.path_for(out_dir / "demo.json").write_text(json.dumps(record, indent=1) + "\n")


def format_summary(record: dict, selected: bool) -> str:
    cols = record["columns"]
    lines = [f"physics demo: {len(record['seeds'])} clips from the same noise, {record['num_steps']} steps, "
             "three columns:"]
    lines += [f"  {i + 1}. {c['description']}" for i, c in enumerate(cols)]
    lines += [f"{'metric (mean over clips)':26s}" + "".join(f"{f'col {i + 1}':>9s}" for i in range(len(cols))),
              f"{'model calls per clip':26s}" + "".join(f"{c['calls_per_clip']:9.1f}" for c in cols)]
    for name in METRIC_NAMES:
        lines.append(f"{name:26s}" + "".join(f"{_num(c['metrics_mean'][name]):>9s}" for c in cols))
    lines.append("tracked: higher is better; the others lower. ballistic, shape, size: tracked clips only.")
    lines.append("Column 2 is where the paper places P&P, shown for comparison: on 512 held-out seeds it neither "
                 "helped nor hurt this model at matched calls (docs/PHYSICS_STUDY.md).")
    if selected:
        lines.append("Column 3 is the placement the pre-registered study rule selected (late). Try another with "
                     "`pnp-sample --demo --plan s0.65-0.40:3` (middle) or `--plan s0.95-0.70:3` (early).")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
