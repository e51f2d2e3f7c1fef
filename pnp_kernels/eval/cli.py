"""``pnp-eval``: a paired A/B evaluation of P&P settings against the unrefined baseline.

For every (prompt, seed) the baseline and each P&P setting run from the same initial noise; weight-free
video metrics are computed per clip and saved per sample as soon as it finishes, so an interrupted
evaluation resumes where it stopped (run the same command again). At the end the folder ``--out`` holds
report.md, report.json, differences.png and contact_sheet.png (docs/EVAL.md says how to read them).

Every argument is checked before a model is loaded (and before torch is imported by this module); a bad
one gives a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..cli.outputs import check_output_folder
from ..cli_common.errors import UsageError, usage_errors  # a bad argument: one line, exit 2
from ..cli_common.options import DTYPES, MAX_SEED, CommandParser, add_sampling_arguments, add_version  # no torch
from ..config import BACKENDS, NOISE_MODES, P_NORMS
from ..staging import TERMINATION, Interrupted
from ..validators import check_int

PROG = "pnp-eval"
DEMO = "demo"
MAX_SETTINGS = 12  # a grid larger than this is almost surely a mistake (each setting is a full run per sample)
DEFAULT_SEEDS = 8


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Compare P&P settings with the unrefined baseline on any checkpoint pnp-sample loads, or on\n"
        "the embedded demo model: every (prompt, seed) runs the baseline and each setting from the same\n"
        "initial noise. Weight-free video metrics, paired differences with 95% bootstrap intervals, NFEs and\n"
        "wall time go into a markdown and JSON report with a plot and a contact sheet (docs/EVAL.md).\n"
        "An interrupted evaluation resumes when the same command is run again.",
        epilog="settings: every combination of the given --plan and --tau values is one setting (a small grid);\n"
        "unset P&P and sampling options follow the model's defaults (pnp-sample's, or the demo's).\n"
        "files in --out: report.md, report.json, differences.png, contact_sheet.png, and samples/ (each\n"
        "sample's results as it finishes: what a resumed run reads).\n"
        "examples:\n  pnp-eval --model demo --seeds 16 --plan 1-3:3 --plan 1-3:3,4-6:1 --tau 0 --tau 0.25\n"
        "  pnp-eval --model ./Wan2.1-T2V-1.3B-Diffusers --prompts prompts.txt --seeds 4 --out eval-wan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    what = parser.add_argument_group("model, prompts and seeds")
    what.add_argument("--model", required=True,
                      help=f"Wan checkpoint folder in diffusers format, or '{DEMO}' (the embedded physics-video model)")
    prompts = what.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="one prompt")
    prompts.add_argument("--prompts", type=Path, help="text file with one prompt per line (blank lines skipped)")
    seeds = what.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, help=f"number of seeds, 0..N-1 (default {DEFAULT_SEEDS})")
    seeds.add_argument("--seed-list", help="comma-separated seeds, e.g. 0,7,42")

    refine = parser.add_argument_group("P&P settings compared with the baseline")
    refine.add_argument("--plan", action="append", help="refinement plan, e.g. 2-5:3,6-14:1 (repeat for several)")
    refine.add_argument("--tau", action="append", type=float, help="uncertainty threshold (repeat for several)")
    refine.add_argument("--p-norm", type=int, choices=P_NORMS, help="channel norm of the uncertainty")
    refine.add_argument("--certain-stop", type=float, help="leave a step once this fraction is certain")
    refine.add_argument("--noise", choices=NOISE_MODES, help="perturbation noise (the demo model: philox)")
    refine.add_argument("--backend", choices=BACKENDS, help="implementation of the fused P&P update")

    sampling = parser.add_argument_group("sampling (Wan checkpoints; unset: the model's pnp-sample defaults)")
    add_sampling_arguments(sampling)  # --steps also applies to the demo model
    sampling.add_argument("--negative-prompt", help="negative prompt (default: the model's)")
    sampling.add_argument("--image", type=Path, help="conditioning image (I2V; optional for TI2V-5B)")
    sampling.add_argument("--dtype", choices=sorted(DTYPES), help="model dtype")
    sampling.add_argument("--device", help="torch device")
    sampling.add_argument("--attention", default="auto", help="attention backend")
    sampling.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    sampling.add_argument("--offload", action="store_true", help="diffusers model CPU offload")

    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=Path("pnp-eval"), help="output folder (default pnp-eval)")
    output.add_argument("--extra", action="append", default=[], choices=("clip",),
                        help="a model-based metric, run only when its weights are on disk (docs/EVAL.md)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


REFINE_OPTIONS = ("p_norm", "certain_stop", "noise", "backend")
WAN_ONLY = ("guidance", "guidance_2", "height", "width", "frames", "image", "dtype", "device")


@dataclass
class Evaluation:
    """A checked evaluation, ready to run: nothing has been loaded yet."""

    sampler: object
    prompts: list[str]
    seeds: list[int]
    settings: list  # runner.Setting
    baseline: object  # runner.Setting
    out: Path
    notices: list[str]
    extras: list  # extras.MetricGroup: the model's own metrics and the optional ones found


def _seeds(args) -> list[int]:
    if args.seed_list is not None:
        try:
            seeds = [int(part) for part in args.seed_list.split(",")]
        except ValueError:
            raise UsageError(f"--seed-list {args.seed_list!r}: give comma-separated integers, e.g. 0,7,42") from None
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"--seed-list {args.seed_list!r} repeats a seed")
    else:
        count = DEFAULT_SEEDS if args.seeds is None else args.seeds
        with usage_errors():
            seeds = list(range(check_int("--seeds", count, low=1)))
    with usage_errors():
        for seed in seeds:
            check_int("--seed-list", seed, low=0, high=MAX_SEED)
    return seeds


def _prompts(args) -> list[str]:
    if args.prompt is not None:
        prompts = [args.prompt.strip()]
    elif args.prompts is not None:
        try:
            text = args.prompts.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--prompts {args.prompts}: cannot read it ({error})") from None
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise UsageError(f"--prompts {args.prompts}: holds no prompt")
    else:
        return []
    if len(set(prompts)) != len(prompts):
        raise UsageError("the prompts repeat one another; each prompt once")
    if not all(prompts):
        raise UsageError("--prompt must not be empty")
    return prompts


def _grid(args) -> list[tuple[str | None, float | None]]:
    taus = args.tau or [None]
    grid = list(itertools.product(args.plan or [None], taus))
    if len(grid) > MAX_SETTINGS:
        raise UsageError(f"{len(grid)} settings ({len(args.plan)} plans x {len(taus)} taus); at most {MAX_SETTINGS}")
    return grid


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    check_output_folder(out / "report.md")  # pnp-sample's check: a probe file, not permission bits


def _label(pnp) -> str:
    return f"plan {pnp.plan} tau {pnp.tau:g}"


def _refine_options(args) -> dict:
    """The P&P options given on the command line (the model's defaults fill in the others)."""
    given = {name: getattr(args, name) for name in REFINE_OPTIONS}
    return {name: value for name, value in given.items() if value is not None}


def _demo_settings(args, grid):
    from ..config import PnPConfig
    from .models import DemoSampler, demo_defaults, physics_metrics

    for name in WAN_ONLY + ("negative_prompt",):
        if getattr(args, name) not in (None, "", False):
            raise UsageError(f"--{name.replace('_', '-')} does not apply to --model {DEMO}")
    with usage_errors():
        steps = None if args.steps is None else check_int("--steps", args.steps, low=1)
    configs = []
    try:
        steps, defaults = demo_defaults(steps)
        for plan, tau in grid:
            given = {**_refine_options(args), **({} if plan is None else {"plan": plan}),
                     **({} if tau is None else {"tau": tau})}
            config = PnPConfig(**{**defaults, **given})
            config.plan.validate(steps)
            configs.append(config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"invalid P&P setting: {error}") from None
    return DemoSampler(steps), configs, [physics_metrics()]


def _wan_namespace(args, prompt: str, plan: str | None, tau: float | None) -> argparse.Namespace:
    """pnp-sample's arguments for one setting, for ``resolve_settings`` to check and complete: its own
    parser's defaults, with every sampling option of this command copied over (the video is never written)."""
    from pnp_kernels.cli import build_parser as sample_parser

    namespace = sample_parser().parse_args(["--model", str(args.model), "--prompt", prompt])
    for name in WAN_ONLY + ("steps", "negative_prompt", "attention", "compile", "offload"):
        setattr(namespace, name, getattr(args, name))
    for name, value in _refine_options(args).items():
        setattr(namespace, name, value)
    namespace.model, namespace.plan, namespace.tau = Path(args.model), plan, tau
    namespace.out = args.out / "unused.mp4"
    return namespace


def _wan_settings(args, grid, prompts):
    from pnp_kernels.cli import resolve_settings

    from .models import WanSampler

    if not prompts:
        raise UsageError(f"--prompt or --prompts is required for a Wan checkpoint (--model {args.model})")
    resolved = [resolve_settings(_wan_namespace(args, prompts[0], plan, tau)) for plan, tau in grid]
    settings, image = resolved[0]
    return WanSampler(settings, image), [each.pnp for each, _ in resolved], []


def prepare(args) -> Evaluation:
    """Check every argument and build the evaluation; loads no model."""
    from ..config import RefinePlan
    from .extras import load_optional
    from .runner import Setting

    seeds, prompts, grid = _seeds(args), _prompts(args), _grid(args)
    _check_out(args.out)
    notices = []
    if args.model == DEMO:
        sampler, configs, model_metrics = _demo_settings(args, grid)
        if prompts:
            notices.append(f"the {DEMO} model is unconditional: the prompts are ignored")
        prompts = [""]
    else:
        sampler, configs, model_metrics = _wan_settings(args, grid, prompts)
    labels = [_label(config) for config in configs]
    if len(set(labels)) != len(labels):
        raise UsageError(f"the settings repeat one another: {', '.join(labels)}")
    baseline = Setting("baseline", replace(configs[0], plan=RefinePlan(())))
    extras, skipped = load_optional(args.extra, uses_prompts=sampler.uses_prompts)
    return Evaluation(sampler, prompts, seeds, [Setting(label, config) for label, config in zip(labels, configs)],
                baseline, args.out, notices + skipped, model_metrics + extras)


def _extra_metrics(evaluation: Evaluation) -> list:
    return [metric for group in evaluation.extras for metric in group.metrics]


def run_fingerprint(evaluation: Evaluation) -> dict:
    """What a resumed evaluation must share with the one it continues (not the prompts and seeds), as
    it reads back from JSON."""
    settings = {s.label: {**vars(s.pnp), "plan": str(s.pnp.plan)} for s in (evaluation.baseline, *evaluation.settings)}
    fingerprint = {"model": evaluation.sampler.fingerprint(), "settings": settings,
                   "extras": [metric.name for metric in _extra_metrics(evaluation)]}
    return json.loads(json.dumps(fingerprint))


def _check_resumable(store, fingerprint: dict) -> None:
    try:
        existing = store.existing_fingerprint()
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"--out {store.folder}: cannot read the record of its evaluation ({error})") from None
    if existing is not None and existing != fingerprint:
        changed = sorted(key for key in set(existing) | set(fingerprint) if existing.get(key) != fingerprint.get(key))
        raise UsageError(f"--out {store.folder} holds an evaluation with other {' and '.join(changed)}; "
                         "give another --out to start a new one")


def run(evaluation: Evaluation, store, fingerprint: dict, progress: bool = True) -> int:
    """Evaluate the samples not done yet and write the report; returns the exit status."""
    from .metrics import REPORTED_METRICS
    from .report import markdown, summarize, write_report
    from .runner import all_samples, evaluate

    samples = all_samples(evaluation.prompts, evaluation.seeds)
    store.start(fingerprint)
    resumed = sum(store.done(sample) for sample in samples)
    if resumed:
        print(f"{PROG}: resuming: {resumed} of {len(samples)} samples are already in {evaluation.out}", file=sys.stderr)
    header = {"model": evaluation.sampler.description, "fingerprint": fingerprint, "num_seeds": len(evaluation.seeds),
              "num_prompts": len(evaluation.prompts) if evaluation.sampler.uses_prompts else 0,
              "steps": fingerprint["model"].get("steps"), "notice": " ".join(evaluation.notices)}
    metrics = list(REPORTED_METRICS) + _extra_metrics(evaluation)
    try:
        records = evaluate(evaluation.sampler, samples, evaluation.baseline, evaluation.settings, store,
                           [group.compute for group in evaluation.extras], progress=progress)
        summary = summarize(records, evaluation.baseline.label, [s.label for s in evaluation.settings], metrics, header)
        paths = write_report(summary, samples, [store.thumbnails(sample) for sample in samples], evaluation.out)
    except KeyboardInterrupt as interruption:  # SIGINT or SIGTERM: every finished sample is on disk already
        done = sum(store.done(sample) for sample in samples)
        print(f"{PROG}: interrupted; {done} of {len(samples)} samples are saved in {evaluation.out}; "
              "run the same command again to resume", file=sys.stderr)
        return interruption.exit_status if isinstance(interruption, Interrupted) else 130
    print(markdown(summary))
    print("\n".join(f"wrote {name}: {path}" for name, path in paths.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pnp-eval``; returns the exit status."""
    from .runner import ResultStore

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        evaluation = prepare(args)
        store, fingerprint = ResultStore(evaluation.out), run_fingerprint(evaluation)
        _check_resumable(store, fingerprint)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    for notice in evaluation.notices:
        print(f"{PROG}: {notice}", file=sys.stderr)
    with TERMINATION.installed():  # SIGTERM ends the run as SIGINT does (exit status 143), not mid-write
        return run(evaluation, store, fingerprint, progress=not args.no_progress)
