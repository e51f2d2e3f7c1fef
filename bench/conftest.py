"""Bench-only pytest setup: every saved result records the device, versions and date; with
PNP_BENCH_RESULTS set (bench/suite.py sets it), each case is appended to that JSON-lines file as soon
as it finishes, so a run stopped part-way keeps every case it completed."""
import json
import os
from pathlib import Path

import pytest

from bench.harness import environment, median_seconds

RESULTS_ENV = "PNP_BENCH_RESULTS"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["pnp_kernels_bench"] = environment()


@pytest.fixture(autouse=True)
def _append_result(request):
    target = os.environ.get(RESULTS_ENV)
    benchmark = request.getfixturevalue("benchmark") if target and "benchmark" in request.fixturenames else None
    yield
    if benchmark is None or "op" not in benchmark.extra_info:  # skipped or failed before it measured anything
        return
    path = Path(target)
    environment_file = path.with_name("environment.json")
    if not environment_file.exists():
        environment_file.write_text(json.dumps(environment(), indent=1) + "\n")
    record = {"test": request.node.nodeid, "seconds": median_seconds(benchmark), **benchmark.extra_info}
    with path.open("a") as results:
        results.write(json.dumps(record) + "\n")
