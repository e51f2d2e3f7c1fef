"""Performance suite: pytest-benchmark files for the fused op, the sampler and the Wan transformer (SPEC §6).

    pytest bench/ --benchmark-only --benchmark-json=bench/results/<date>-<device>/bench.json
    bench/gpu_suite.sh          # the whole GPU run (tests + benchmarks + summary) in ~10 minutes
    python -m bench.report      # docs/PERFORMANCE.md from every saved run
    pytest bench/ --benchmark-disable   # CI: each case once, tiny CPU shapes

Settings (environment): PNP_BENCH_SIZE ("full" Wan shapes, default on a GPU; "tiny", default on
CPU); PNP_BENCH_COMPILED_CASES ("headline" or "all": torch.compile cases of the op);
PNP_BENCH_COMPILED_ATTENTION (comma list or "all": attention backends timed compiled, default
"native"); PNP_BENCH_STUB_MS and PNP_BENCH_SAMPLER_ROUNDS (sampler overhead); PNP_BENCH_E2E_STEPS
(end to end, default 50 on a GPU).
"""
