"""``pnp-sample``: a prompt (and for I2V an image) in, an mp4 sampled with P&P refinement out.

Loads a Wan 2.1 / 2.2 checkpoint stored locally in diffusers format, detects which model it is from its
``model_index.json``, samples with ``pnp_kernels.wan`` and writes, next to ``--out``:

- ``NAME.mp4``                the refined video
- ``NAME.json``               every setting, the seed, the environment, NFEs, per-step iterations, early
                              exits, certain fractions and timings
- ``NAME_baseline.mp4``       with --baseline: the unrefined video from the same seed,
  ``NAME_side_by_side.mp4``   and ``baseline | P&P`` with labels
- ``NAME_uncertainty.mp4``    with --save-uncertainty: each refined step's uncertainty over the video,
  ``NAME_uncertainty.png``    and a grid that summarises it

Every argument is checked before a model is loaded: a bad one gives a one-line error and exit status 2.
A failure while running (NaN from the model, a full disk) gives one line and exit status 1; SIGINT and
SIGTERM give 130 and 143. In every case nothing half-written is left behind. ``pnp-sample --demo``
runs an embedded demo that needs no weights.

Modules: ``args`` (the command line), ``settings`` (validation of the output options, the sampling
options by ``cli_common``), ``run`` (sampling and the sidecar), ``outputs`` (output names and checks;
written through ``pnp_kernels.staging``), ``demo``. What pnp-eval shares lives in
``pnp_kernels.cli_common``: errors, checkpoint detection and the per-model defaults, the sampling
options, loading and calling the pipeline, and --parallel (context parallelism under torchrun,
docs/DISTRIBUTED.md).
Importing this package does not import torch.
"""
from __future__ import annotations

import signal
import sys
from typing import Sequence

from ..cli_common.errors import CommandError, UsageError
from ..staging import TERMINATION, Interrupted
from .args import PROG, build_parser

__all__ = ["PROG", "UsageError", "build_parser", "main"]


def _main(argv: list[str]) -> str | None:
    """Run the command; returns what to print on success (None: nothing, on the ranks beside rank 0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo:
        from .demo import run_demo

        return "\n".join(f"wrote {path}" for path in run_demo(args, parser))
    from ..cli_common.parallel import parallel_launch
    from .run import run, summary
    from .settings import resolve_settings

    launch = parallel_launch(args)
    if launch is None:
        settings, image = resolve_settings(args)
        return summary(run(settings, image, argv))
    from ..cli_common.parallel import Ranks

    ranks = Ranks(launch).start()
    try:
        with ranks.together("checking the arguments"):
            args.device = ranks.device
            settings, image = resolve_settings(args)
            settings = ranks.check_fits(settings)
        record = run(settings, image, argv, ranks)
    finally:
        ranks.stop()
    return summary(record) if ranks.writes else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pnp-sample``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with TERMINATION.installed():
        try:
            report = _main(argv)
        except CommandError as error:
            if not error.quiet:
                print(f"{PROG}: error: {error}", file=sys.stderr)
            return error.exit_status
        except KeyboardInterrupt as interruption:  # SIGINT or SIGTERM; cleanup has already run
            if not isinstance(interruption, Interrupted):  # Python's own SIGINT handler was in place
                interruption = Interrupted(signal.SIGINT)
            print(f"{PROG}: {interruption.describe()}", file=sys.stderr)
            return interruption.exit_status
    if report is not None:
        print(report)
    return 0
