"""Files a run writes, staged so that a failed or interrupted run leaves nothing behind.

Every application (``pnp-sample``, ``pnp-eval``, the demos) writes its outputs through ``StagedFiles``:
each file is written under a temporary name next to its final one and renamed into place by
``StagedFiles.commit`` at the very end. SIGINT and SIGTERM raise ``Interrupted`` (so cleanup code runs)
while ``TERMINATION.installed()`` is in effect, and wait while a commit renames files, so that a run's
files are all in place or none are. ``StagedFiles.claim`` holds an output path for one run, so that two
runs given the same output cannot both write it. Nothing here imports torch.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. ``written`` lists the files already in place: all of a run's or none,
    because a commit is never cut in half (see ``StagedFiles.commit``)."""

    def __init__(self, signum: int, written: Sequence[Path] = ()):
        super().__init__(signum)
        self.signum = signum
        self.written = list(written)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        if self.written:
            return f"{name} arrived after the outputs were complete; all {len(self.written)} files are in place"
        return f"interrupted by {name}; nothing was written"


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


class OutputBusy(Exception):
    """Another running process holds the claim on an output path."""

    def __init__(self, target: Path, holder: str):
        super().__init__(f"{target} is being written by another run ({holder}); wait for it to end or "
                         "choose another output")
        self.target = target


class _Claim:
    """An exclusive advisory lock (flock) on a hidden file beside ``target``, holding this process's id.
    The system drops the lock when the process dies, so a killed run never blocks the next one."""

    def __init__(self, target: Path):
        self.target = target
        absolute = Path(os.path.abspath(target))  # "." and ".." resolved: the lock needs a real name
        self.path = absolute.parent / f".{absolute.name}.lock"
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.read(descriptor, 32).decode(errors="replace").strip()
                os.close(descriptor)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise OutputBusy(target, f"process {holder}" if holder else "a process") from None
            if self._still_named(descriptor):
                break
            os.close(descriptor)  # its holder released it and removed the file meanwhile: start over
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self.descriptor = descriptor

    def _still_named(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # while locked: a process that opened it sees the name is gone
        os.close(self.descriptor)


class StagedFiles:
    """Files written under temporary names in their target folders and renamed into place together
    by ``commit``; ``discard`` removes whatever was written, so a failed run leaves nothing behind."""

    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []
        self.created_folders: list[Path] = []
        self.claims: list[_Claim] = []

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()

    def claim(self, target: Path) -> None:
        """Hold ``target`` (an output file or folder) for this run until ``discard``; raise ``OutputBusy``
        when another process holds it. Check whether ``target`` may be replaced after claiming it: a
        check made before could race another run's commit."""
        self._make_folder(Path(os.path.abspath(target)).parent)
        self.claims.append(_Claim(target))

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
        """Remove whatever was staged and not committed, release the claims, and remove the folders
        made for them (always call it, also after ``commit``: a ``with`` block does)."""
        for temporary, _ in self.staged:
            temporary.unlink(missing_ok=True)
        for claim in self.claims:
            claim.release()
        self.claims.clear()
        for folder in reversed(self.created_folders):
            try:
                folder.rmdir()
            except OSError:  # someone else put something there meanwhile: leave it
                pass
        self.staged.clear()
        self.created_folders.clear()
