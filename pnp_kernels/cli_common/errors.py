"""How the command-line tools fail: one line on stderr and an exit status, never a traceback for a known cause."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


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
