"""The matched-NFE study of P&P on the physics model: ``python -m pnp_kernels.physics.study``.

Rows (every row samples the same seeds from the same initial noise, so rows are paired by seed):
Euler with N steps; Euler with as many model calls as each P&P row (the fair comparison); P&P placed
early / middle / late (a third of the steps each), K in {1, 2, 3}, tau in {0, 0.25}; a negative control
whose perturbation noise is 10x too strong; and the real clips of the same seeds for reference.
First the quality gate: Euler's clips must show recognisable balls, else the study stops there.
Writes study.json (per-seed metrics of every row), study.md (tables), physics_study.png (metrics
against model calls) and physics_samples.png (what the gate judged). See docs/PHYSICS_STUDY.md.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import PnPConfig, RefinePlan
from ..validators import check_int
from .data import render_clips, simulate
from .generate import DEFAULT_STEPS, generate, latents_to_frames, shipped_model
from .metrics import METRIC_NAMES, batch_metrics
from .model import PhysicsVelocityNet
from .train import clips_to_latents

NUM_SEEDS = 64
BATCH = 8  # clips sampled together (see run_variant)
ITERATIONS = (1, 2, 3)
TAUS = (0.0, 0.25)  # uncertainty threshold in latent units (pixels in [-1, 1]): 0.25 = 12.5% brightness
PLACEMENTS = ("early", "middle", "late")
BROKEN_SCALE = 10.0
SHOWN_CLIPS = 3  # clips per row in the samples figure
# Quality gate: Euler must draw a ball in every frame of >= 80% of clips, and its permanence and size
# metrics must be within 3x of the real clips'. Real clips score ~0 on both, so "3x" gets a floor:
# 0.05 events per frame transition, 5% radius variation (chosen before any model was sampled).
GATE_TRACKED = 0.8
GATE_FACTOR = 3.0
GATE_FLOORS = {"permanence": 0.05, "size": 0.05}
LOWER_IS_BETTER = {name: name != "tracked" for name in METRIC_NAMES}


def placement_steps(name: str, num_steps: int) -> tuple[int, int]:
    """Inclusive outer steps of a placement: three thirds of steps 1..N-1 (step 0 is pure noise)."""
    width = max((num_steps - 1) // 3, 1)
    first = {"early": 1, "middle": 1 + width, "late": num_steps - width}[name]
    return first, first + width - 1


@dataclass(frozen=True)
class Variant:
    """One row: Euler with ``num_steps``, or P&P (placement, K, tau) on it; ``broken`` = negative control."""

    num_steps: int
    placement: str | None = None
    iterations: int = 0
    tau: float = 0.0
    broken: bool = False

    @property
    def planned_nfe(self) -> int:
        config = self.config()
        return self.num_steps + (config.plan.extra_nfe(self.num_steps) if config else 0)

    def config(self) -> PnPConfig | None:
        if self.placement is None:
            return None
        first, last = placement_steps(self.placement, self.num_steps)
        return PnPConfig(plan=RefinePlan([(first, last, self.iterations)]), tau=self.tau, noise="philox")

    def label(self) -> str:
        if self.placement is None:
            return f"Euler {self.num_steps}"
        first, last = placement_steps(self.placement, self.num_steps)
        name = f"P&P {self.placement} ({first}-{last}) K={self.iterations} tau={self.tau:g}"
        return f"BROKEN (noise x{BROKEN_SCALE:g}) {name}" if self.broken else name


def study_variants(num_steps: int = DEFAULT_STEPS) -> list[Variant]:
    pnp = [Variant(num_steps, p, k, tau) for p in PLACEMENTS for k in ITERATIONS for tau in TAUS]
    matched = sorted({v.planned_nfe for v in pnp})
    control = Variant(num_steps, "early", max(ITERATIONS), 0.0, broken=True)
    return [Variant(num_steps)] + [Variant(n) for n in matched] + pnp + [control]


class NoisierPerturbation(torch.nn.Module):
    """Negative control: the model is shown P&P's perturbed inputs with their noise ``scale`` x too strong.

    A call at the same sigma as the previous call is a perturbed input z' = (1 - s) x0 + s eps, where
    x0 = z - s v from the previous call; the model gets (1 - s) x0 + scale s eps instead. Exact for tau = 0
    (nothing frozen), which is how the study uses it."""

    def __init__(self, model: PhysicsVelocityNet, scale: float = BROKEN_SCALE):
        super().__init__()
        self.model, self.scale, self.config = model, scale, model.config
        self.previous: tuple[float, torch.Tensor, torch.Tensor] | None = None

    def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        shown = z
        if self.previous is not None and self.previous[0] == sigma:
            _, z_before, v_before = self.previous
            x0 = z_before - sigma * v_before
            shown = z + (self.scale - 1.0) * (z - (1.0 - sigma) * x0)
        v = self.model(shown, sigma)
        self.previous = (sigma, z.clone(), v)  # the sampler may reuse z's buffer
        return v


def real_clips(seeds: Sequence[int], model: PhysicsVelocityNet) -> np.ndarray:
    """The training distribution's clips for the given seeds, quantised to uint8 RGB like the samples."""
    clips = np.concatenate([
        render_clips(simulate(1, np.random.default_rng(s), num_frames=model.config["num_frames"],
                              size=model.config["size"]), model.config["size"])
        for s in seeds
    ])
    return latents_to_frames(clips_to_latents(clips))


def run_variant(variant: Variant, seeds: Sequence[int], model: PhysicsVelocityNet) -> dict:
    """Sample one row and measure it: metrics per seed, model calls per clip, seconds.

    Seeds are sampled in fixed batches of ``BATCH`` so that rerunning one batch of seeds reproduces
    its clips bit for bit (the convolutions round differently at other batch sizes, and tau's
    thresholds can turn a 1e-7 difference into a different pixel)."""
    started = time.perf_counter()
    seeds = list(seeds)
    frames, nfe_per_clip = [], []
    for start in range(0, len(seeds), BATCH):
        sampled = generate(seeds[start : start + BATCH], variant.config(), num_steps=variant.num_steps,
                           model=NoisierPerturbation(model) if variant.broken else model)
        frames.append(sampled.frames)
        nfe_per_clip += sampled.stats.nfe_per_sample
    metrics = batch_metrics(np.concatenate(frames))
    return {
        "label": variant.label(), "variant": asdict(variant), "planned_nfe": variant.planned_nfe,
        "nfe_per_clip": float(np.mean(nfe_per_clip)),
        "metrics": {name: values.tolist() for name, values in metrics.items()},
        "seconds": time.perf_counter() - started,
    }


def mean_ci(values) -> tuple[float, float, int]:
    """Mean, half-width of its 95% confidence interval (normal approximation) and n, NaNs left out."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, 0
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(half), len(values)


def paired_difference(row: dict, reference: dict, name: str) -> tuple[float, float, int]:
    """Mean and 95% CI of row - reference over the seeds where both are defined."""
    a, b = (np.asarray(r["metrics"][name], dtype=np.float64) for r in (row, reference))
    return mean_ci(a - b)


def quality_gate(euler: dict, real: dict) -> dict:
    tracked = mean_ci(euler["metrics"]["tracked"])[0]
    checks = {"tracked": {"value": tracked, "limit": GATE_TRACKED, "passed": tracked >= GATE_TRACKED}}
    for name, floor in GATE_FLOORS.items():
        value, reference = mean_ci(euler["metrics"][name])[0], mean_ci(real["metrics"][name])[0]
        limit = max(GATE_FACTOR * reference, floor)
        checks[name] = {"value": value, "real": reference, "limit": limit, "passed": bool(value <= limit)}
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks}


def matched_euler(row: dict, rows: list[dict]) -> dict | None:
    """The Euler row with as many model calls as ``row`` plans."""
    for other in rows:
        if other["variant"]["placement"] is None and other["planned_nfe"] == row["planned_nfe"] and other is not row:
            return other
    return None


def run_study(seeds: Sequence[int], num_steps: int = DEFAULT_STEPS, model: PhysicsVelocityNet | None = None,
              variants: Sequence[Variant] | None = None, progress: bool = True) -> dict:
    """Everything the study measures, as a JSON-ready dict (stops after the gate if it fails)."""
    model = shipped_model() if model is None else model
    variants = study_variants(num_steps) if variants is None else list(variants)
    real = {"label": "real clips", "variant": None, "planned_nfe": 0, "nfe_per_clip": 0.0,
            "metrics": {k: v.tolist() for k, v in batch_metrics(real_clips(seeds, model)).items()}}
    rows = [run_variant(variants[0], seeds, model)]
    gate = quality_gate(rows[0], real)
    if gate["passed"]:
        for variant in variants[1:]:
            rows.append(run_variant(variant, seeds, model))
            if progress:
                print(f"  {rows[-1]['label']}: {rows[-1]['seconds']:.1f}s", flush=True)
    return {"seeds": list(seeds), "num_steps": num_steps, "gate": gate, "real": real, "rows": rows}


def _cell(mean: float, half: float, digits: int = 3) -> str:
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def format_tables(result: dict) -> str:
    gate = result["gate"]
    lines = [f"Quality gate ({len(result['seeds'])} seeds, Euler {result['num_steps']} steps): "
             f"{'PASSED' if gate['passed'] else 'FAILED'}"]
    for name, check in gate["checks"].items():
        real = f", real {check['real']:.4f}" if "real" in check else ""
        lines.append(f"- {name}: {check['value']:.4f} (limit {check['limit']:.4f}{real}) "
                     f"{'ok' if check['passed'] else 'FAILED'}")
    header = "| row | NFE | " + " | ".join(METRIC_NAMES) + " |"
    lines += ["", "Mean ± 95% CI per clip (tracked: higher is better; all others: lower is better).", "",
              header, "|" + "---|" * (len(METRIC_NAMES) + 2)]
    for row in [result["real"]] + result["rows"]:
        cells = [_cell(*mean_ci(row["metrics"][name])[:2]) for name in METRIC_NAMES]
        calls = f"{row['nfe_per_clip']:.1f}" if row["variant"] else "-"
        lines.append(f"| {row['label']} | {calls} | " + " | ".join(cells) + " |")
    euler = result["rows"][0]
    pnp_rows = [r for r in result["rows"] if r["variant"]["placement"] is not None]
    if pnp_rows:
        lines += ["", "Paired differences (P&P minus Euler with the same number of model calls; mean ± 95% CI "
                  "over seeds). Bold: the CI excludes 0 in P&P's favour; italic: against P&P.", "",
                  "| row | vs | " + " | ".join(METRIC_NAMES) + " |", "|" + "---|" * (len(METRIC_NAMES) + 2)]
        for row in pnp_rows:
            reference = matched_euler(row, result["rows"]) or euler
            cells = []
            for name in METRIC_NAMES:
                mean, half, _ = paired_difference(row, reference, name)
                cells.append(_mark(mean, half, name))
            lines.append(f"| {row['label']} | {reference['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mark(mean: float, half: float, name: str) -> str:
    text = _cell(mean, half)
    if math.isnan(mean) or math.isnan(half) or abs(mean) <= half:
        return text
    better = mean < 0 if LOWER_IS_BETTER[name] else mean > 0
    return f"**{text}**" if better else f"*{text}*"


def save_samples_figure(seeds: list[int], num_steps: int, path: Path) -> Path:
    """Real clips and Euler samples (N and 2N steps) for a few seeds, frame by frame: what the gate judges."""
    from .plots import save_sample_strips

    rows = [("real (training data)", real_clips(seeds, shipped_model()))]
    rows += [(f"Euler {n}", generate(seeds, None, num_steps=n).frames) for n in (num_steps, 2 * num_steps)]
    return save_sample_strips(rows, path, clips=len(seeds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Matched-NFE study of P&P on the physics model (docs/PHYSICS_STUDY.md).")
    parser.add_argument("--out", type=Path, default=Path("physics_study"), help="folder for study.json, study.md and the figure")
    parser.add_argument("--seeds", type=int, default=NUM_SEEDS, help="number of seeds (0 .. n-1)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Euler steps N of the base grid")
    args = parser.parse_args(argv)
    seeds = range(check_int("--seeds", args.seeds, low=2))
    started = time.perf_counter()
    result = run_study(list(seeds), check_int("--steps", args.steps, low=4))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(json.dumps(result, indent=1) + "\n")
    table = format_tables(result)
    (args.out / "study.md").write_text(table + "\n")
    save_samples_figure(list(seeds)[:SHOWN_CLIPS], args.steps, args.out / "physics_samples.png")
    if result["gate"]["passed"]:
        from .plots import save_study_figure

        save_study_figure(result, args.out / "physics_study.png")
    print(table)
    print(f"\nwritten to {args.out}/ ({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
