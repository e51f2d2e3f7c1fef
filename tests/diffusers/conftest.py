"""tests/diffusers: the tiny Wan components (tests/wan) and the naive P&P loop (tests/) are reused by import."""
import sys
from pathlib import Path

import pytest
import torch

for folder in (Path(__file__).parent, Path(__file__).parent.parent / "wan", Path(__file__).parent.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models' ops are far too small to gain from intra-op threads; with several threads their
    start-up dominates (ten times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
