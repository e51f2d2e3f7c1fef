"""tests/diffusers: one thread for the tiny models; their components come from ``tests.wan.tiny`` and
``tiny_models``, the naive P&P loop from ``tests.naive``."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models' ops are far too small to gain from intra-op threads; with several threads their
    start-up dominates (ten times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
