"""The pre-registered physics study (docs/PHYSICS_PREREG.md): ``python -m pnp_kernels.physics.study``.

Stages, each resumable (a row already in the results file is not sampled again):
``gate`` judges a checkpoint on the gate seeds; ``headline`` samples every headline row on 512 study
seeds; ``curve`` samples the quality curve's rows on 256 and measures contrast lost per re-noise;
``report`` writes the tables and figures from every checkpoint's results.
Every clip of a row starts from the same noise as the other rows' clip of that seed.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..validators import check_int
from .contrast import contrast_per_renoise
from .controls import NoisierPerturbation, restart_sample
from .data import render_clips, simulate
from .generate import generate, latents_to_frames
from .metrics import batch_metrics
from .model import PhysicsVelocityNet, load_weights
from .rows import Row, curve_rows, headline_rows
from .seeds import gate_seeds, study_seeds
from .train import clips_to_latents

BATCH = 8  # clips sampled together, in seed order: a batch of seeds reproduces its clips bit for bit
GATE_SEEDS, HEADLINE_SEEDS, CURVE_SEEDS, CONTRAST_SEEDS = 1024, 512, 256, 64
GATE_TRACKED = 0.8
GATE_FACTOR = 3.0
GATE_FLOORS = {"permanence": 0.05, "size": 0.05}
RESULTS = Path(__file__).parents[2] / "docs" / "physics_study"


def sample_row(row: Row, seeds: Sequence[int], model: PhysicsVelocityNet) -> tuple[np.ndarray, list[int]]:
    """uint8 frames (B, F, H, W, 3) of ``row`` for ``seeds`` and the model calls per clip."""
    if row.kind == "restart":
        (first, last, k), = row.resolved_plan.ranges
        latents = restart_sample(model, seeds, row.num_steps, row.shift, first, last, k)
        return latents_to_frames(latents), [row.planned_calls] * len(seeds)
    sampled = generate(seeds, row.config(), num_steps=row.num_steps, shift=row.shift,
                       model=NoisierPerturbation(model) if row.kind == "broken" else model)
    return sampled.frames, list(sampled.stats.nfe_per_sample)


def measure_row(row: Row, seeds: Sequence[int], model: PhysicsVelocityNet) -> dict:
    """Every metric of every clip of ``row`` (per seed), its model calls and wall time."""
    started = time.perf_counter()
    frames, calls = [], []
    for start in range(0, len(seeds), BATCH):
        batch_frames, batch_calls = sample_row(row, seeds[start:start + BATCH], model)
        frames.append(batch_frames)
        calls += batch_calls
    metrics = batch_metrics(np.concatenate(frames))
    return {"label": row.label(), "row": asdict(row), "planned_calls": row.planned_calls, "calls": calls,
            "metrics": {name: [_round(v) for v in values] for name, values in metrics.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def _round(value: float) -> float | None:
    return None if not np.isfinite(value) else float(f"{value:.6g}")  # JSON has no NaN


def real_clips(seeds: Sequence[int], model: PhysicsVelocityNet) -> np.ndarray:
    """The training distribution's clips for the given seeds, quantised to uint8 RGB like the samples."""
    clips = np.concatenate([
        render_clips(simulate(1, np.random.default_rng(s), num_frames=model.config["num_frames"],
                              size=model.config["size"]), model.config["size"])
        for s in seeds
    ])
    return latents_to_frames(clips_to_latents(clips))


def quality_gate(model: PhysicsVelocityNet, seeds: Sequence[int]) -> dict:
    """Euler 20 on the uniform grid against the real clips of the same (gate) seeds."""
    euler = measure_row(Row("euler"), seeds, model)["metrics"]
    real = {k: v.tolist() for k, v in batch_metrics(real_clips(seeds, model)).items()}
    tracked = float(np.mean(euler["tracked"]))
    checks = {"tracked": {"value": tracked, "limit": GATE_TRACKED, "passed": tracked >= GATE_TRACKED}}
    for name, floor in GATE_FLOORS.items():
        value, reference = (float(np.nanmean(np.array(m[name], dtype=float))) for m in (euler, real))
        limit = max(GATE_FACTOR * reference, floor)
        checks[name] = {"value": value, "real": reference, "limit": limit, "passed": bool(value <= limit)}
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks, "seeds": len(seeds),
            "blank": float(np.mean(euler["blank"]))}


class Results:
    """One checkpoint's results file (DIR/<name>.json), rewritten after every row so that a stopped run
    resumes. Processes sampling different rows of one checkpoint share the file: each save merges what
    this process measured into the file's current contents under a lock."""

    def __init__(self, folder: Path, name: str):
        self.path = Path(folder) / f"{name}.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"name": name, "rows": {}}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = json.loads(self.path.read_text()) if self.path.is_file() else {"rows": {}}
            for key, value in current.items():  # in place: callers hold on to self.data["rows"]
                self.data.setdefault(key, value)
            for label, row in current["rows"].items():
                self.data["rows"].setdefault(label, row)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self.data, separators=(",", ":")) + "\n")
            partial.replace(self.path)


def run_rows(results: Results, model: PhysicsVelocityNet, rows: list[Row], seeds: list[int]) -> None:
    """Sample each row not yet in the results (on at least as many seeds), saving after each."""
    stored = results.data["rows"]
    for row in rows:
        done = stored.get(row.label())
        if done is not None and len(done["calls"]) >= len(seeds):
            continue
        stored[row.label()] = measure_row(row, seeds, model)
        results.save()
        print(f"  [{results.data['name']}] {row.label()}: {stored[row.label()]['seconds']:.0f}s", flush=True)


def run_stage(stage: str, results: Results, weights: Path, part: tuple[int, int] = (0, 1)) -> None:
    model = load_weights(weights)
    results.data["weights"] = Path(weights).name
    if stage == "gate" and "gate" not in results.data:
        results.data["gate"] = quality_gate(model, gate_seeds(GATE_SEEDS))
        results.save()
        gate = results.data["gate"]
        print(f"  [{results.data['name']}] gate {'passed' if gate['passed'] else 'FAILED'}: {gate['checks']}", flush=True)
    elif stage == "headline":
        results.data["headline"] = True
        index, parts = part
        run_rows(results, model, headline_rows()[index::parts], study_seeds(HEADLINE_SEEDS))
    elif stage == "curve":
        if "contrast" not in results.data:
            results.data["contrast"] = contrast_per_renoise(model, study_seeds(CONTRAST_SEEDS))
            results.save()
        run_rows(results, model, curve_rows(), study_seeds(CURVE_SEEDS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The pre-registered physics study (docs/PHYSICS_PREREG.md).")
    parser.add_argument("stage", choices=("gate", "headline", "curve", "report"))
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=WEIGHTS",
                        help="a checkpoint to run the stage on (repeatable), e.g. 2x=checkpoints/physics/steps_7000.safetensors")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the per-checkpoint results (resumed)")
    parser.add_argument("--out", type=Path, default=Path("physics_study"), help="folder for the report's tables and figures")
    parser.add_argument("--part", type=parse_part, default=(0, 1), metavar="K/N",
                        help="headline: sample only every N-th row from the K-th (0-based), to share the rows "
                             "between N processes")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"CPU threads: torch {torch.get_num_threads()} (sampling runs on 1), os {os.cpu_count()}", flush=True)
    if args.stage == "report":
        from .report import write_report

        write_report(args.results, args.out)
    for name, weights in (_checkpoint(text) for text in args.checkpoint):
        run_stage(args.stage, Results(args.results, name), weights, args.part)
    print(f"wall time {time.perf_counter() - started:.0f}s", flush=True)


def parse_part(text: str) -> tuple[int, int]:
    index, _, parts = text.partition("/")
    if not (index.isdigit() and parts.isdigit() and int(index) < int(parts)):
        raise argparse.ArgumentTypeError(f"must be K/N with 0 <= K < N, got {text!r}")
    return int(index), int(parts)


def _checkpoint(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_file():
        raise SystemExit(f"--checkpoint must be NAME=WEIGHTS with an existing weights file, got {text!r}")
    return name, Path(path)


if __name__ == "__main__":
    main()
