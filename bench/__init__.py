"""Performance suite: pytest-benchmark files for the fused op, the sampler and the Wan transformer (SPEC §6).

Run ``pytest bench/ --benchmark-only --benchmark-json=...`` (small shapes on CPU, Wan shapes on a GPU),
``bench/gpu_suite.sh`` for the whole GPU run, and ``python -m bench.report`` for docs/PERFORMANCE.md.
"""
