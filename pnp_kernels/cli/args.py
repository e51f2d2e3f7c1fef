"""The command line of ``pnp-sample``. Building the parser imports neither torch nor diffusers, so
``--help`` and argument errors answer at once."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_common.checkpoint import MODEL_KINDS
from ..cli_common.options import DTYPES, CommandParser, add_sampling_arguments, add_version, integer, real
from ..config import BACKENDS, NOISE_MODES

PROG = "pnp-sample"
DEMOS = ("video", "toy")
DEFAULT_OUT = Path("pnp-sample.mp4")
DEMO_FOLDERS = {"video": Path("pnp-demo"), "toy": Path("pnp-demo-toy")}  # each demo's default --out


def _epilog() -> str:
    lines = ["defaults per detected model (from the authors' published scripts):"]
    for kind in MODEL_KINDS.values():
        d = kind.defaults
        guidance = f"{d.guidance:g}" + (f" / guidance-2 {d.guidance_2:g}" if d.guidance_2 is not None else "")
        with_image = kind.defaults_for(with_image=True)
        tau = f"{d.tau:g}" + (f" ({with_image.tau:g} with --image)" if with_image.tau != d.tau else "")
        lines.append(f"  {kind.description:<44} {d.steps} steps, plan {d.plan}, tau {tau}, guidance {guidance}")
    negative = {kind.defaults.negative_prompt for kind in MODEL_KINDS.values()}
    lines += [
        f"  every model: 480x832, 81 frames, 16 fps, seed 0, p-norm 1, certain-stop 0.999, "
        f"negative prompt {' / '.join(map(repr, sorted(negative)))}",
        "",
        "files written for --out NAME.mp4: NAME.mp4, NAME.json (settings, seed, environment, NFEs, iterations,",
        "early exits, certain fractions, timings); with --baseline NAME_baseline.mp4 and NAME_side_by_side.mp4;",
        "with --save-uncertainty NAME_uncertainty.mp4 and NAME_uncertainty.png. Existing files are replaced",
        "only with --overwrite; a run started with the --out of a run still going is refused. Exit status: 0 done,",
        "1 failed while running, 2 bad input (or --out in use), 130/143 interrupted.",
        "",
        "examples:",
        "  pnp-sample --demo                  # the embedded video demo, no weights needed (writes ./pnp-demo/)",
        "  pnp-sample --demo toy              # the 2-D toy demo (writes ./pnp-demo-toy/)",
        '  pnp-sample --model ./Wan2.1-T2V-1.3B-Diffusers --prompt "A cat walks on the grass" \\',
        "      --baseline --save-uncertainty --out outputs/cat.mp4",
        "  torchrun --nproc-per-node 4 -m pnp_kernels --parallel ulysses --model ./Wan2.1-T2V-14B-Diffusers \\",
        '      --prompt "A cat walks on the grass" --out outputs/cat.mp4   # one video on 4 GPUs',
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Sample a video from a local Wan checkpoint (diffusers format) with Predict-and-Perturb "
        "self-refinement (docs/ALGORITHM.md). Options left unset follow the published scripts for the "
        "detected model (listed below).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    _add_model_arguments(parser.add_argument_group("model and prompt"))
    sampling = parser.add_argument_group("sampling")
    add_sampling_arguments(sampling)
    sampling.add_argument("--fps", type=integer, help="frames per second of the written video")
    sampling.add_argument("--seed", type=integer, default=0, help="seed of the initial noise and of P&P (default 0)")
    _add_refine_arguments(parser.add_argument_group("P&P refinement"))
    _add_runtime_arguments(parser.add_argument_group("runtime"))
    _add_parallel_arguments(parser.add_argument_group(
        "context parallelism", "one video sampled by several processes launched with torchrun "
        "(torchrun --nproc-per-node N -m pnp_kernels --parallel ulysses ...); each rank runs on cuda:LOCAL_RANK "
        "(cpu without CUDA) and rank 0 writes the files (docs/DISTRIBUTED.md)"))
    _add_output_arguments(parser.add_argument_group("output"))
    return parser


def _add_model_arguments(model) -> None:
    model.add_argument("--model", type=Path, help="checkpoint folder in diffusers format (T2V, A14B, TI2V-5B or I2V)")
    model.add_argument("--prompt", help="text prompt")
    model.add_argument("--negative-prompt", help="negative prompt (default: the model's, see below)")
    model.add_argument("--image", type=Path, help="conditioning image (I2V; optional for TI2V-5B)")
    model.add_argument("--demo", nargs="?", const="video", choices=DEMOS,
                       help="run an embedded demo instead (no weights): 'video' (default) samples a small "
                       "physics-video model with and without P&P, 'toy' the 2-D toy; --out is then a folder "
                       f"(default ./{DEMO_FOLDERS['video']}/, ./{DEMO_FOLDERS['toy']}/ for the toy); the video demo takes --steps, --plan and --seed, "
                       "the toy --seed")


def _add_refine_arguments(refine) -> None:
    refine.add_argument("--plan", help="refined steps and their P&P iterations K, e.g. '2-5:3,6-14:1' (steps are "
                        "0-based: step 0 is the first, at pure noise; 'none': no refinement). Forms that fit any "
                        "step count: 'f0.04-0.12:3' (fractions of the run), 's0.9-0.7:2' (sigma from 0.9 down to "
                        "0.7), 'all:1', each optionally '@high' or '@low' (one expert of an A14B model), and the "
                        "presets 'published', 'published-wan22', 'distilled' (docs/ALGORITHM.md)")
    refine.add_argument("--tau", type=real, help="uncertainty threshold below which a region is certain")
    refine.add_argument("--p-norm", type=integer, default=1, help="channel norm of the uncertainty: 1 or 2")
    refine.add_argument("--certain-stop", type=real, default=0.999,
                        help="leave a step's iterations once this fraction is certain")
    refine.add_argument("--noise", choices=NOISE_MODES, default="generator",
                        help="perturbation noise: the seeded generator (published order) or counter-based philox")
    refine.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="implementation of the fused P&P update (checked before the model loads)")


def _add_runtime_arguments(runtime) -> None:
    runtime.add_argument("--attention", default="auto", help="attention backend: auto or a diffusers backend name")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    runtime.add_argument("--dtype", choices=sorted(DTYPES), help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    runtime.add_argument("--offload", action="store_true", help="diffusers model CPU offload (needs a CUDA device)")
    runtime.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")


def _add_parallel_arguments(parallel) -> None:
    parallel.add_argument("--parallel", choices=("ulysses", "ring"),
                          help="split every transformer call over the ranks: Ulysses (attention heads exchanged) "
                          "or ring attention (keys and values passed around)")
    parallel.add_argument("--parallel-degree", type=integer, metavar="N",
                          help="ranks in the --parallel mode (default: all); the remaining factor of the process "
                          "count uses the other mode, e.g. 4 processes with --parallel ulysses --parallel-degree 2 "
                          "run 2 Ulysses x 2 ring")
    parallel.add_argument("--parallel-timeout", type=real, metavar="SECONDS",
                          help="seconds a rank waits for the others in a collective before the run fails (default 600)")


def _add_output_arguments(output) -> None:
    output.add_argument("--out", type=Path,
                        help=f"output mp4 (default {DEFAULT_OUT}; with --demo a folder, default ./{DEMO_FOLDERS['video']}/ "
                        f"or ./{DEMO_FOLDERS['toy']}/)")
    output.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    output.add_argument("--baseline", action="store_true",
                        help="also sample without refinement (same seed) and write a side-by-side video")
    output.add_argument("--save-uncertainty", action="store_true",
                        help="write heat maps of each refined step's uncertainty (video and PNG grid)")


def given_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """The destinations the user set to something other than their default."""
    return {name for name, value in vars(args).items() if value != parser.get_default(name)}
