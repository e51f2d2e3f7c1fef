"""Every argument of a pnp-sample run checked and completed with the model's defaults, before any weight
loads: the sampling options by ``pnp_kernels.cli_common.sampling`` (shared with pnp-eval), the output
options here. The cheap checks (numbers, plan, model folder, output paths) come first and need no torch."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from ..cli_common.errors import UsageError
from ..cli_common.outputs import check_output_folder
from ..cli_common.sampling import SamplingOptions, SamplingSettings, resolve_sampling
from .args import DEFAULT_OUT
from .outputs import check_not_overwriting, output_paths


@dataclass(frozen=True)
class Settings(SamplingSettings):
    """Everything a run needs, validated: the sampling settings and the files it writes."""

    outputs: dict[str, Path]
    baseline: bool
    save_uncertainty: bool
    overwrite: bool  # replace files of an earlier run (checked again when the run claims its outputs)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "baseline": self.baseline, "save_uncertainty": self.save_uncertainty}


def run_files(outputs: dict[str, Path], baseline: bool, save_uncertainty: bool) -> list[Path]:
    """Which of ``output_paths`` a run writes."""
    names = ["video", "sidecar"]
    names += ["baseline", "side_by_side"] if baseline else []
    names += ["uncertainty_video", "uncertainty_grid"] if save_uncertainty else []
    return [outputs[name] for name in names]


def _check_outputs(out: Path, args: argparse.Namespace) -> None:
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out {out}: the video is written as mp4; give a name ending in .mp4")
    check_output_folder(out)  # every other output goes into the same folder
    if not args.overwrite:
        check_not_overwriting(run_files(output_paths(out), args.baseline, args.save_uncertainty))


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, object]:
    """Check every argument and fill in the model's defaults; returns the settings and the loaded
    conditioning image (or None). Nothing is loaded or written here except the image."""
    if args.model is None:
        raise UsageError("--model is required (a Wan checkpoint folder in diffusers format), or use --demo")
    if not args.prompt or not args.prompt.strip():
        raise UsageError("--prompt is required and must not be empty")
    options = SamplingOptions(**{option.name: getattr(args, option.name) for option in fields(SamplingOptions)})
    out = DEFAULT_OUT if args.out is None else args.out
    sampling, image = resolve_sampling(options, before_loading=partial(_check_outputs, out, args),
                                       extra_packages=["matplotlib"] if args.save_uncertainty else [])
    if args.save_uncertainty and not sampling.pnp.plan:
        raise UsageError("--save-uncertainty needs refined steps, but the plan refines none")
    settings = Settings(**vars(sampling), outputs=output_paths(out), baseline=args.baseline,
                        save_uncertainty=args.save_uncertainty, overwrite=args.overwrite)
    return settings, image
