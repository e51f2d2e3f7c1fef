"""What both command-line tools do with an output path: check before anything runs that it can be
created, and hold it for the run so that a second run given the same one is refused."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..staging import OutputBusy, StagedFiles
from .errors import UsageError


def existing_ancestor(path: Path) -> Path:
    """The nearest folder above ``path`` that exists (or the first existing non-folder, to be refused)."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    return ancestor


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Raise unless ``path`` can be created: its nearest existing ancestor is a directory in which a
    file can really be made (a probe file, removed at once; permission bits alone miss read-only
    mounts and pseudo file systems)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file name such as {path / 'video.mp4'}")
    ancestor = existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot write in {ancestor} ({error.strerror or error})") from None


def claim_output(staged: StagedFiles, target: Path, flag: str = "--out") -> None:
    """Hold ``target`` for this run; another run holding it is a usage error (exit status 2)."""
    try:
        staged.claim(target)
    except OutputBusy as error:
        raise UsageError(f"{flag} {error}") from None
    except OSError as error:  # the folder beside it takes no lock file (read-only, no permission)
        raise UsageError(f"{flag} {target}: cannot claim it for this run ({error.strerror or error})") from None
