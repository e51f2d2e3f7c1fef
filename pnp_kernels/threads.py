"""One CPU thread for the small embedded models."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_thread():
    """Run torch on one CPU thread, then restore the caller's setting.

    The embedded models' tensors are tiny: extra threads only add synchronisation (and slow down badly
    when the cores are busy), and one thread fixes the order of floating-point reductions, which keeps
    training and sampling reproducible whatever the machine's core count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
