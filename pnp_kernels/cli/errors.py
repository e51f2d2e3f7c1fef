"""How ``pnp-sample`` fails: one line on stderr and an exit status, never a traceback for a known cause."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


class CommandError(Exception):
    """A failure reported in one line; ``exit_status`` is what the command returns."""

    exit_status = 1
    quiet = False  # in a --parallel run, set on the ranks that leave the message to rank 0


class UsageError(CommandError):
    """A bad argument, model folder, image or output path: exit status 2, found before any model loads."""

    exit_status = 2


@contextmanager
def usage_errors() -> Iterator[None]:
    """The TypeError / ValueError of a shared validator (pnp_kernels.validators, called with the flag as
    the argument's name) as a one-line UsageError."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


class RunError(CommandError):
    """A failure while running (the model returned NaN, the disk is full): exit status 1."""

    exit_status = 1


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. ``written`` lists the files already in place: all of a run's or none,
    because a commit is never cut in half (see ``outputs.StagedFiles.commit``)."""

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
