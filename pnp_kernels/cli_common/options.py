"""Command-line pieces both tools use. Building a parser with them imports neither torch nor diffusers,
so ``--help`` and argument errors answer at once."""
from __future__ import annotations

import argparse
import math

from ..validators import quoted
from .errors import UsageError

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}
MAX_SEED = 2**63 - 1


class CommandParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line) instead of printing the usage."""

    def error(self, message):
        raise UsageError(message)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the tool's name and pnp_kernels' version (answered without importing torch)."""
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not an integer") from None


def real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a finite number")
    return value


def add_sampling_arguments(group) -> None:
    """The sampling options pnp-sample and pnp-eval share (unset: the model's published defaults)."""
    group.add_argument("--steps", type=integer, help="denoising steps")
    group.add_argument("--guidance", type=real, help="classifier-free guidance scale (<= 1: no guidance)")
    group.add_argument("--guidance-2", type=real, help="guidance of the low-noise expert (A14B only)")
    group.add_argument("--height", type=integer, help="frame height in pixels")
    group.add_argument("--width", type=integer, help="frame width in pixels")
    group.add_argument("--frames", type=integer, help="number of frames (4k + 1)")


def check_backend(requested: str, device: str, dtype: str, channels: int) -> None:
    """An explicitly requested pnp_update backend must be able to run on the run's latents (checked before
    any model loads; imports torch)."""
    if requested == "auto":
        return
    from ..info import backend_reasons

    reasons = backend_reasons(device, dtype, channels).reasons[requested]
    if reasons:
        raise UsageError(f"--backend {requested} cannot run here: {'; '.join(reasons)} (--backend auto picks one that can)")
