"""``pnp-sample --demo``: an embedded demo that needs no weights.

``video`` (the default) runs ``pnp_kernels.physics.demo.run_demo``: a small flow-matching video model
shipped with the package, sampled with and without P&P from the same noise, written as mp4s and a
JSON of metrics. ``toy`` runs the 2-D toy demo (``pnp_kernels.toy.demo``). A demo writes into a scratch
folder beside --out; its files are moved into --out together at the end, so a failed or interrupted
demo leaves nothing behind.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..cli_common.errors import RunError, UsageError, usage_errors
from ..cli_common.options import MAX_SEED
from ..cli_common.outputs import check_output_folder, claim_output, existing_ancestor
from ..config import MAX_STEPS, RefinePlan
from ..staging import StagedFiles
from ..validators import check_int, quoted
from .args import DEMO_FOLDERS, given_options

# Options each demo honours; any other option set on the command line is refused.
DEMO_OPTIONS = {"video": ("steps", "plan", "seed"), "toy": ("seed",)}
ALWAYS = ("demo", "out", "overwrite")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    honoured = DEMO_OPTIONS[args.demo]
    ignored = sorted(given_options(args, parser) - set(ALWAYS) - set(honoured))
    if ignored:
        raise UsageError(f"--demo {args.demo} does not use {', '.join(map(_flag, ignored))}; it takes "
                         f"{', '.join(map(_flag, honoured + ALWAYS[1:]))}")
    with usage_errors():
        check_int("--seed", args.seed, low=0, high=MAX_SEED)
        if args.steps is not None:
            check_int("--steps", args.steps, low=1, high=MAX_STEPS)
    if args.plan is not None:
        try:
            plan = RefinePlan.parse(args.plan)
            if args.steps is not None and plan.is_resolved:  # the demo resolves the other forms
                plan.validate(args.steps)
        except ValueError as error:
            raise UsageError(f"--plan {quoted(args.plan)}: {error}") from None


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: with --demo, --out is a folder")
    check_output_folder(out / "demo.json")


def _check_empty(out: Path, overwrite: bool) -> None:
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} is not empty; pass --overwrite to replace the demo's files in it")


def _run(kind: str, scratch: Path, args: argparse.Namespace) -> None:
    if kind == "video":
        from ..physics.demo import run_demo

        run_demo(scratch, seed=args.seed, steps=args.steps, plan=args.plan)
    else:
        from ..toy.demo import run_demo

        table, _ = run_demo(scratch, seed=args.seed)
        print(table)


def run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    """Run the demo ``args.demo`` into ``args.out`` (default: its entry of ``DEMO_FOLDERS``); returns the
    files written. The folder is claimed first, so a second run given the same one meanwhile is refused."""
    _check_arguments(args, parser)
    out = DEMO_FOLDERS[args.demo] if args.out is None else args.out
    _check_out(out)
    with StagedFiles() as staged:
        claim_output(staged, out)
        _check_empty(out, args.overwrite)  # after the claim: no other run can fill it meanwhile
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".partial", dir=existing_ancestor(out)) as scratch:
            try:
                _run(args.demo, Path(scratch), args)
            except OSError as error:
                raise RunError(f"--demo {args.demo}: cannot write its files for --out {out}: "
                               f"{error.strerror or error}; nothing was written") from None
            except ValueError as error:  # the demo's own check of --steps / --plan against its sigma grid
                raise UsageError(f"--demo {args.demo}: {error}") from None
            for written in sorted(Path(scratch).iterdir()):
                staged.adopt(written, out / written.name)
            return staged.commit()
