"""Performance suite: pytest-benchmark files for the fused op, the sampler and the Wan transformer
(targets: docs/PERFORMANCE.md).

    bash bench/gpu_suite.sh              # the GPU run in one device call (bench/suite.py; docs/PERFORMANCE.md)
    python -m bench.suite --dry-run      # every stage of it on a CPU, tiny shapes (CI: bench/test_suite.py)
    pytest bench/ --benchmark-only --benchmark-json=bench/results/<date>-<device>/bench.json
    python -m bench.report               # docs/PERFORMANCE.md from every saved run
    pytest bench/ --benchmark-disable    # CI: each case once, tiny CPU shapes

Settings (environment): PNP_BENCH_SIZE ("full" Wan shapes, default on a GPU; "tiny", default on
CPU); PNP_BENCH_UPDATE_VARIANTS ("sampling" or "all": update variants timed); PNP_BENCH_STUB_MS and
PNP_BENCH_SAMPLER_ROUNDS (sampler overhead); PNP_BENCH_E2E_STEPS and PNP_BENCH_E2E_ROUNDS (end to
end, default 50 steps on a GPU, 3 rounds); PNP_BENCH_RESULTS (append every finished case to this
JSON-lines file); PNP_SUITE_DEADLINE (set by the suite: cases that would outlast it skip).
"""
