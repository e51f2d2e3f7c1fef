"""Running a test body on several spawned ranks, with a deadline so that a stuck collective fails the
test instead of hanging it."""
import time

import pytest
import torch.multiprocessing as mp

TIMEOUT_S = 240


def run_ranks(function, args: tuple, nprocs: int) -> None:
    """Run ``function(rank, *args)`` in ``nprocs`` spawned processes; a failing rank fails the test (its
    error is raised here), and so does a rank still running after TIMEOUT_S."""
    context = mp.start_processes(function, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"ranks did not finish within {TIMEOUT_S}s: a collective is stuck")
