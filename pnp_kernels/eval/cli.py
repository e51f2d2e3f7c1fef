"""``pnp-eval``: a paired A/B evaluation of P&P settings against the unrefined baseline.

For every (prompt, seed) the baseline and each P&P setting run from the same initial noise; weight-free
video metrics are computed per clip and saved per sample as soon as it finishes, so an interrupted
evaluation resumes where it stopped (run the same command again). At the end the folder ``--out`` holds
report.md, report.json, differences.png and contact_sheet.png (docs/EVAL.md says how to read them).
Under torchrun the samples are shared out over the processes (``distributed``).

Every argument is checked before a model is loaded (and before torch is imported by this module); a bad
one gives a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..cli_common.errors import CommandError, UsageError, usage_errors  # a bad argument: one line, exit 2
from ..cli_common.options import (DTYPES, MAX_SEED, CommandParser, add_sampling_arguments, add_version,  # no torch
                                  check_backend, integer, real)
from ..cli_common.outputs import check_output_folder, claim_output
from ..cli_common.parallel import MODES
from ..config import BACKENDS, MAX_STEPS, NOISE_MODES, P_NORMS
from ..physics.seeds import RANGE_SIZE  # torch-free
from ..staging import TERMINATION, Interrupted, StagedFiles
from ..validators import check_int
from .session import PROG, Evaluation, check_resumable, run

DEMO = "demo"
MAX_SETTINGS = 12  # a grid larger than this is almost surely a mistake (each setting is a full run per sample)
# Samples (prompts x seeds) per evaluation: the report's bootstrap holds resamples x samples indices in
# memory (10,000 x 4,096 = 330 MB), and the work list is made before the first sample.
MAX_SAMPLES = 4096
DEFAULT_SEEDS = 8
DEMO_SEED_LIMIT = RANGE_SIZE  # the demo model's seeds map into one held-out range of that size


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
    _add_samples_arguments(parser.add_argument_group("model, prompts and seeds"))
    _add_refine_arguments(parser.add_argument_group("P&P settings compared with the baseline"))
    _add_wan_arguments(parser.add_argument_group("sampling (Wan checkpoints; unset: the model's pnp-sample defaults)"))
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=Path("pnp-eval"), help="output folder (default pnp-eval)")
    output.add_argument("--extra", action="append", default=[], choices=("clip",),
                        help="a model-based metric, run only when its weights are on disk (docs/EVAL.md)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_processes_arguments(parser.add_argument_group(
        "several processes: torchrun --nproc-per-node N -m pnp_kernels.eval ... (docs/EVAL.md)",
        "the samples are shared out over the processes, which save them into --out (a folder every node sees); "
        "rank 0 writes the report"))
    return parser


def _add_samples_arguments(what) -> None:
    what.add_argument("--model", required=True,
                      help=f"Wan checkpoint folder in diffusers format, or '{DEMO}' (the embedded physics-video model)")
    prompts = what.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="one prompt")
    prompts.add_argument("--prompts", type=Path, help="text file with one prompt per line (blank lines skipped)")
    seeds = what.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, help=f"number of seeds, 0..N-1 (default {DEFAULT_SEEDS})")
    seeds.add_argument("--seed-list", help="comma-separated seeds, e.g. 0,7,42")


def _add_refine_arguments(refine) -> None:
    refine.add_argument("--plan", action="append", help="refinement plan, e.g. 2-5:3,6-14:1 (repeat for several)")
    refine.add_argument("--tau", action="append", type=float, help="uncertainty threshold (repeat for several)")
    refine.add_argument("--p-norm", type=int, choices=P_NORMS, help="channel norm of the uncertainty")
    refine.add_argument("--certain-stop", type=float, help="leave a step once this fraction is certain")
    refine.add_argument("--noise", choices=NOISE_MODES, help="perturbation noise (the demo model: philox)")
    refine.add_argument("--backend", choices=BACKENDS, help="implementation of the fused P&P update")


def _add_wan_arguments(sampling) -> None:
    add_sampling_arguments(sampling)  # --steps also applies to the demo model
    sampling.add_argument("--negative-prompt", help="negative prompt (default: the model's)")
    sampling.add_argument("--image", type=Path, help="conditioning image (I2V; optional for TI2V-5B)")
    sampling.add_argument("--dtype", choices=sorted(DTYPES), help="model dtype")
    sampling.add_argument("--device", help="torch device")
    sampling.add_argument("--attention", default="auto", help="attention backend")
    sampling.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    sampling.add_argument("--offload", action="store_true", help="diffusers model CPU offload")


def _add_processes_arguments(processes) -> None:
    processes.add_argument("--parallel", choices=MODES,
                           help="sample each video on a group of --parallel-degree processes together (Wan "
                           "checkpoints): Ulysses (attention heads exchanged) or ring attention")
    processes.add_argument("--parallel-degree", type=integer, metavar="N",
                           help="processes per video with --parallel (default: all); the groups sample other videos")
    processes.add_argument("--parallel-timeout", type=real, metavar="SECONDS",
                           help="seconds a process waits for the others before the run fails; more than one sample "
                           "(its baseline and every setting) takes (default 600)")


REFINE_OPTIONS = ("p_norm", "certain_stop", "noise", "backend")
WAN_ONLY = ("guidance", "guidance_2", "height", "width", "frames", "image", "dtype", "device")
# This command's options that are sampling options of a Wan checkpoint, under the same names.
WAN_SAMPLING = WAN_ONLY + ("steps", "negative_prompt", "attention", "compile", "offload") + REFINE_OPTIONS


def _seeds(args) -> list[int]:
    if args.seed_list is not None:
        parts = args.seed_list.split(",")
        if len(parts) > MAX_SAMPLES:
            raise UsageError(f"--seed-list gives {len(parts)} seeds; at most {MAX_SAMPLES}")
        try:
            seeds = [int(part) for part in parts]
        except ValueError:
            raise UsageError(f"--seed-list {args.seed_list!r}: give comma-separated integers, e.g. 0,7,42") from None
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"--seed-list {args.seed_list!r} repeats a seed")
    else:
        count = DEFAULT_SEEDS if args.seeds is None else args.seeds
        with usage_errors():
            seeds = list(range(check_int("--seeds", count, low=1, high=MAX_SAMPLES)))
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
    plans, taus = args.plan or [None], args.tau or [None]
    if len(plans) * len(taus) > MAX_SETTINGS:
        raise UsageError(f"{len(plans) * len(taus)} settings ({len(plans)} plans x {len(taus)} taus); "
                         f"at most {MAX_SETTINGS}")
    return list(itertools.product(plans, taus))


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    check_output_folder(out / "report.md")  # a probe file, not permission bits


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
    configs = []
    try:
        steps, defaults, sigmas = demo_defaults(args.steps)
        for plan, tau in grid:
            given = {**_refine_options(args), **({} if plan is None else {"plan": plan}),
                     **({} if tau is None else {"tau": tau})}
            config = PnPConfig(**{**defaults, **given})
            configs.append(replace(config, plan=config.plan.resolve(sigmas)))
    except (TypeError, ValueError) as error:
        raise UsageError(f"invalid P&P setting: {error}") from None
    check_backend(configs[0].backend, DemoSampler.device, "float32", DemoSampler.latent_channels)
    return DemoSampler(steps), configs, [physics_metrics()]


def _wan_settings(args, grid, prompts, ranks):
    from ..cli_common.sampling import SamplingOptions, resolve_sampling
    from .models import WanSampler

    model = Path(args.model)
    if not model.is_dir():  # before the prompt: a mistyped model must not read as a missing prompt
        problem = "not a directory" if model.exists() else "no such directory"
        raise UsageError(f"--model {args.model}: {problem}; give a Wan checkpoint folder in diffusers format or "
                         f"'{DEMO}'")
    if not prompts:
        raise UsageError(f"--prompt or --prompts is required for a Wan checkpoint (--model {args.model})")
    given = {name: getattr(args, name) for name in WAN_SAMPLING}
    if ranks is not None:
        given["device"] = ranks.device
    # Each setting checked with the first prompt; the sampler replaces prompt, seed and P&P per sample.
    resolved = [resolve_sampling(SamplingOptions(model, prompts[0], plan=plan, tau=tau, **given)) for plan, tau in grid]
    settings, image = resolved[0]
    return WanSampler(settings, image, ranks), [each.pnp for each, _ in resolved], []


def prepare(args, ranks=None) -> Evaluation:
    """Check every argument and build the evaluation; loads no model. ``ranks``: torchrun's processes."""
    from ..config import RefinePlan
    from .extras import load_optional
    from .runner import Setting

    seeds, prompts, grid = _seeds(args), _prompts(args), _grid(args)
    if args.model != DEMO and len(prompts) * len(seeds) > MAX_SAMPLES:  # the demo model takes no prompt
        raise UsageError(f"{len(prompts)} prompts x {len(seeds)} seeds = {len(prompts) * len(seeds)} samples; "
                         f"at most {MAX_SAMPLES} in one evaluation")
    with usage_errors():
        if args.steps is not None:
            check_int("--steps", args.steps, low=1, high=MAX_STEPS)
    _check_out(args.out)
    notices = []
    if args.model == DEMO:
        sampler, configs, model_metrics = _demo_settings(args, grid)
        if max(seeds) >= DEMO_SEED_LIMIT:
            raise UsageError(f"seed {max(seeds)}: the {DEMO} model takes seeds below {DEMO_SEED_LIMIT}")
        if prompts:
            notices.append(f"the {DEMO} model is unconditional: the prompts are ignored")
        prompts = [""]
    else:
        sampler, configs, model_metrics = _wan_settings(args, grid, prompts, ranks)
    labels = [_label(config) for config in configs]
    if len(set(labels)) != len(labels):
        raise UsageError(f"the settings repeat one another: {', '.join(labels)}")
    baseline = Setting("baseline", replace(configs[0], plan=RefinePlan(())))
    extras, skipped = load_optional(args.extra, uses_prompts=sampler.uses_prompts)
    return Evaluation(sampler, prompts, seeds, [Setting(label, config) for label, config in zip(labels, configs)],
                      baseline, args.out, notices + skipped, model_metrics + extras)


def _checked(args, ranks=None):
    """The evaluation, its output folder and its fingerprint, every argument checked."""
    from .runner import ResultStore

    evaluation = prepare(args, ranks)
    store, fingerprint = ResultStore(evaluation.out), evaluation.fingerprint()
    check_resumable(store, fingerprint)
    return evaluation, store, fingerprint


def _notify(evaluation: Evaluation) -> None:
    for notice in evaluation.notices:
        print(f"{PROG}: {notice}", file=sys.stderr)


def _main(argv: list[str]) -> int:
    from .distributed import eval_launch, refuse_differences

    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:  # every process of a torchrun launch finds it: rank 0 speaks for all
        error.quiet = os.environ.get("RANK", "0") != "0"
        raise
    launch = eval_launch(args, demo=args.model == DEMO)
    with StagedFiles() as claim:  # holds --out until the evaluation ends: a second one given it is refused
        if launch is None:
            evaluation, store, fingerprint = _checked(args)
            claim_output(claim, evaluation.out)
            _notify(evaluation)
            return run(evaluation, store, fingerprint, progress=not args.no_progress)
        from ..cli_common.parallel import Ranks

        ranks = Ranks(launch).start()
        try:
            with ranks.together("checking the arguments"):
                evaluation, store, fingerprint = _checked(args, ranks)
            refuse_differences(ranks, {"model and settings": fingerprint, "prompts": evaluation.prompts,
                                       "seeds": evaluation.seeds, "--out": str(evaluation.out)})
            with ranks.together("claiming the output folder"):
                if ranks.writes:
                    claim_output(claim, evaluation.out)
                    _notify(evaluation)
            return run(evaluation, store, fingerprint, progress=not args.no_progress, ranks=ranks)
        finally:
            ranks.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pnp-eval``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with TERMINATION.installed():  # SIGTERM ends the run as SIGINT does (exit status 143), never mid-write
        try:
            return _main(argv)
        except CommandError as error:
            if not error.quiet:
                print(f"{PROG}: error: {error}", file=sys.stderr)
            return error.exit_status
        except KeyboardInterrupt as interruption:  # while checking: no sample has started
            if not isinstance(interruption, Interrupted):  # Python's own SIGINT handler was in place
                interruption = Interrupted(signal.SIGINT)
            print(f"{PROG}: {interruption.describe()}", file=sys.stderr)
            return interruption.exit_status
