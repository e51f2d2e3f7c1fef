"""Output files: their names, the checks made before a run, and staging so a failed run leaves nothing.

Every file is written under a temporary name next to its final one and renamed into place by
``StagedFiles.commit`` at the very end. SIGINT and SIGTERM raise ``Interrupted`` (so cleanup code
runs) and wait while a commit renames files, so that a run's files are all in place or none are.
"""
from __future__ import annotations

import os
import secrets
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import Interrupted, UsageError

TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def check_not_overwriting(paths: Iterable[Path], flag: str = "--out") -> None:
    """Refuse to replace files from an earlier run unless --overwrite was given."""
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise UsageError(f"{flag}: {', '.join(existing)} already exist(s); pass --overwrite to replace")


class _TerminationSignals:
    """SIGINT and SIGTERM as ``Interrupted`` exceptions while ``installed``; held back inside ``held``."""

    def __init__(self):
        self.pending: list[int] | None = None  # a list while held: the signals that arrived meanwhile

    def _handle(self, signum, frame) -> None:
        if self.pending is not None:
            self.pending.append(signum)
            return
        raise Interrupted(signum)

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
            yield
            return
        previous = {number: signal.signal(number, self._handle) for number in TERMINATION_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def held(self) -> Iterator[list[int]]:
        """Signals that arrive inside wait until it ends; the caller gets the list of those that came."""
        self.pending = []
        try:
            yield self.pending
        finally:
            self.pending = None


TERMINATION = _TerminationSignals()


def _move_aside(path: Path) -> Path | None:
    """Rename an existing ``path`` to a hidden name beside it and return that name (None: nothing there)."""
    if not path.exists():
        return None
    aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}.previous")
    os.replace(path, aside)
    return aside


class StagedFiles:
    """Files written under temporary names in their target folders and renamed into place together
    by ``commit``; ``discard`` removes whatever was written, so a failed run leaves nothing behind."""

    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []
        self.created_folders: list[Path] = []

    def _make_folder(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir()
            self.created_folders.append(new)

    def path_for(self, final: Path) -> Path:
        """A temporary name in ``final``'s folder (created if needed) to write ``final`` under."""
        folder = final.absolute().parent
        self._make_folder(folder)
        # Not created here (mkstemp would make it private, 0600): the writer creates it with the
        # usual permissions. The real suffix stays last: imageio and matplotlib pick the format by it.
        temporary = folder / f".{final.stem}.{secrets.token_hex(6)}.partial{final.suffix}"
        self.staged.append((temporary, final))
        return temporary

    def adopt(self, written: Path, final: Path) -> None:
        """Stage a file already written elsewhere on the same file system (a scratch folder)."""
        self._make_folder(final.absolute().parent)
        self.staged.append((written, final))

    def commit(self) -> list[Path]:
        """Rename every staged file into place and return the final paths, all or none. A file already
        there (--overwrite) is first moved aside, so a rename that fails puts back both the new files
        placed before it and the old files they replaced. SIGINT / SIGTERM wait until the last rename
        is done, then raise ``Interrupted`` naming the files in place."""
        placed = []  # (temporary, final, the old file moved aside or None)
        with TERMINATION.held() as arrived:
            try:
                for temporary, final in self.staged:
                    previous = _move_aside(final)
                    try:
                        os.replace(temporary, final)
                    except OSError:
                        if previous is not None:
                            os.replace(previous, final)
                        raise
                    placed.append((temporary, final, previous))
            except OSError:
                for temporary, final, previous in reversed(placed):
                    os.replace(final, temporary)  # discard() removes it with the others
                    if previous is not None:
                        os.replace(previous, final)
                raise
        for _, _, previous in placed:
            if previous is not None:
                previous.unlink(missing_ok=True)
        written = [final for _, final in self.staged]
        self.staged.clear()
        self.created_folders.clear()
        if arrived:
            raise Interrupted(arrived[0], written)
        return written

    def discard(self) -> None:
        for temporary, _ in self.staged:
            temporary.unlink(missing_ok=True)
        for folder in reversed(self.created_folders):
            try:
                folder.rmdir()
            except OSError:  # someone else put something there meanwhile: leave it
                pass
        self.staged.clear()
        self.created_folders.clear()
