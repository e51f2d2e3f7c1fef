"""The physics video demo: Euler and P&P on the shipped bouncing-ball model, from the same noise.

``run_demo(out_dir)`` samples a grid of clips both ways and writes, all or nothing: demo.mp4 (P&P),
demo_baseline.mp4 (Euler), demo_side_by_side.mp4 (labelled), demo_uncertainty.mp4 and
demo_uncertainty.png (where P&P found the model unsure) and demo.json (settings, model calls and the
physics metrics of both). Clips are tiled into one grid and enlarged (nearest neighbour) so that the
16-pixel frames are watchable. The plan is fixed in advance (P&P early, where the paper places it
for motion), not picked from the study's results; docs/PHYSICS_STUDY.md says how it fares.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import PnPConfig, RefinePlan
from ..validators import check_bool, check_int
from ..video import write_comparison
from .generate import DEFAULT_STEPS, GeneratedClips, generate, sigma_grid
from .metrics import METRIC_NAMES, batch_metrics
from .model import SHIPPED_WEIGHTS

GRID_ROWS, GRID_COLUMNS = 2, 4
UPSCALE = 6  # 16 px -> 96 px per clip
FPS = 6
DEMO_TAU = 0.25
# video.write_comparison's files under the names pnp-sample gives them for --out demo.mp4.
VIDEO_FILES = {"video": "demo.mp4", "baseline": "demo_baseline.mp4", "side_by_side": "demo_side_by_side.mp4",
               "uncertainty_video": "demo_uncertainty.mp4", "uncertainty_grid": "demo_uncertainty.png"}
FILES = (*VIDEO_FILES.values(), "demo.json")


def default_plan(num_steps: int) -> RefinePlan:
    """P&P K=3 on the first third of the steps after step 0 (steps 1-6 of 20)."""
    from .study import placement_steps

    first, last = placement_steps("early", num_steps)
    return RefinePlan([(first, last, 3)])


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


def summarise(clips: GeneratedClips) -> dict:
    metrics = batch_metrics(clips.frames)
    return {
        "nfe": clips.stats.nfe,
        "nfe_per_clip": float(np.mean(clips.stats.nfe_per_sample)),
        "metrics_mean": {name: float(np.nanmean(v)) if np.isfinite(v).any() else None for name, v in metrics.items()},
        "metrics_per_clip": {name: v.tolist() for name, v in metrics.items()},
    }


def run_demo(out_dir: Path, *, seed: int = 0, steps: int | None = None, plan: str | None = None,
             progress: bool = True) -> dict:
    """Sample, write the six demo files into ``out_dir`` (all or none) and return the demo.json record."""
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir must be a pathlib.Path, got {out_dir!r} ({type(out_dir).__name__})")
    seed = check_int("seed", seed, low=0)
    steps = DEFAULT_STEPS if steps is None else check_int("steps", steps, low=4)
    if plan is not None and not isinstance(plan, str):
        raise TypeError(f"plan must be a string such as '1-3:3' or None, got {plan!r}")
    # Any plan form (step indices, fractions, sigma ranges, presets) on the demo's own grid.
    refine = default_plan(steps) if plan is None else RefinePlan.parse(plan).resolve(sigma_grid(steps))
    if not refine:
        raise ValueError(f"plan {plan!r} refines no step; the demo compares P&P with Euler")
    check_bool("progress", progress)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    count = GRID_ROWS * GRID_COLUMNS
    seeds = list(range(seed * count, (seed + 1) * count))
    config = PnPConfig(plan=refine, tau=DEMO_TAU, noise="philox")
    baseline = generate(seeds, None, num_steps=steps, progress=progress)
    refined = generate(seeds, config, num_steps=steps, capture_uncertainty=True, progress=progress)
    record = {
        "model": SHIPPED_WEIGHTS.name, "seeds": seeds, "num_steps": steps, "plan": str(refine), "tau": DEMO_TAU,
        "noise": "philox (clip seeds); initial noise torch.Generator().manual_seed(clip seed)",
        "grid": [GRID_ROWS, GRID_COLUMNS], "upscale": UPSCALE, "fps": FPS,
        "euler": summarise(baseline), "pnp": summarise(refined), "files": list(FILES),
        "sampling_seconds": time.perf_counter() - started,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; it may become out_dir itself
    try:
        _write_files(staging, baseline, refined, config, record)
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(format_summary(record))
    print(f"sampled and wrote {', '.join(FILES)} in {time.perf_counter() - started:.1f}s")
    return record


def _write_files(folder: Path, baseline: GeneratedClips, refined: GeneratedClips, config: PnPConfig,
                 record: dict) -> None:
    euler_frames = tile(baseline.frames).astype(np.float32) / 255.0
    pnp_frames = tile(refined.frames).astype(np.float32) / 255.0
    labels = (f"Euler, {record['euler']['nfe']} calls", f"P&P {record['plan']}, {record['pnp']['nfe']} calls")
    write_comparison(pnp_frames, FPS, lambda name: folder / VIDEO_FILES[name], baseline=euler_frames, labels=labels,
                     maps=tiled_maps(refined.stats.uncertainty_maps), tau=config.tau)
    (folder / "demo.json").write_text(json.dumps(record, indent=1) + "\n")


def _move_into(staging: Path, out_dir: Path) -> None:
    """Publish the staged files: one rename when out_dir is new, else one same-disk rename per file."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    for name in FILES:
        os.replace(staging / name, out_dir / name)


def format_summary(record: dict) -> str:
    lines = [f"physics demo: {len(record['seeds'])} clips, seeds {record['seeds'][0]}-{record['seeds'][-1]}, "
             f"{record['num_steps']} steps, P&P plan {record['plan']} tau {record['tau']:g}",
             f"{'metric (mean over clips)':26s} {'Euler':>8s} {'P&P':>8s}",
             f"{'model calls':26s} {record['euler']['nfe']:8d} {record['pnp']['nfe']:8d}"]
    for name in METRIC_NAMES:
        a, b = record["euler"]["metrics_mean"][name], record["pnp"]["metrics_mean"][name]
        lines.append(f"{name:26s} {_num(a):>8s} {_num(b):>8s}")
    lines.append("tracked: higher is better; the others: lower is better (docs/PHYSICS_STUDY.md)")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
