"""``pnp-sample``'s output files: their names and the checks made before and at the start of a run (that
--out can be created, and holding it for a run, are in ``pnp_kernels.cli_common.outputs``). They are written through
``pnp_kernels.staging.StagedFiles``, so a failed run leaves nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..cli_common.errors import UsageError
from ..cli_common.outputs import claim_output
from ..staging import StagedFiles


def output_paths(out: Path) -> dict[str, Path]:
    """Every file a run can write, named after --out."""
    stem = out.with_suffix("")
    return {
        "video": out,
        "sidecar": out.with_suffix(".json"),
        "baseline": Path(f"{stem}_baseline.mp4"),
        "side_by_side": Path(f"{stem}_side_by_side.mp4"),
        "uncertainty_video": Path(f"{stem}_uncertainty.mp4"),
        "uncertainty_grid": Path(f"{stem}_uncertainty.png"),
    }


def check_not_overwriting(paths: Iterable[Path], flag: str = "--out") -> None:
    """Refuse to replace files from an earlier run unless --overwrite was given."""
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise UsageError(f"{flag}: {', '.join(existing)} already exist(s); pass --overwrite to replace")


def claim_outputs(staged: StagedFiles, files: list[Path], overwrite: bool, flag: str = "--out") -> None:
    """Claim a run's files (named after the first, ``flag``'s path) and, without ``overwrite``, check
    again that none exists: an earlier check could race the commit of a run that ended meanwhile."""
    claim_output(staged, files[0], flag)
    if not overwrite:
        check_not_overwriting(files, flag)
