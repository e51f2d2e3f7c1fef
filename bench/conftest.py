"""Bench-only pytest setup: every saved result file records the device, versions and date."""
from bench.harness import environment


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["pnp_kernels_bench"] = environment()
