"""bench/report.py on made-up result files: labels, pending GPU figures, target arithmetic."""
import json

from bench import report


def write_run(folder, *, gpu: bool, benchmarks: list[dict], date: str) -> None:
    folder.mkdir(parents=True)
    environment = {"device": "Test GPU" if gpu else "CPU (x86_64)", "gpu": gpu, "date": date, "torch": "2.x",
                   "triton_interpret": not gpu}
    data = {"machine_info": {"pnp_kernels_bench": environment}, "datetime": date, "benchmarks": benchmarks}
    (folder / "bench.json").write_text(json.dumps(data))


def update_case(provider: str, seconds: float, *, shape_name="wan480p", gpu=True) -> dict:
    extra = dict(op="pnp_update", provider=provider, shape=[1, 16, 21, 60, 104], shape_name=shape_name,
                 guidance=True, prev=True, noise="tensor", bytes=10**9, copy_gbps=3000.0,
                 gbps=1.0 / seconds, percent_of_copy=100.0 / seconds / 3000.0)
    if gpu:  # the device-event time must win over pytest-benchmark's host time
        extra["device_time"] = {"median_ms": seconds * 1e3}
        return {"extra_info": extra, "stats": {"median": 99.0}}
    return {"extra_info": extra, "stats": {"median": seconds}}


def end_to_end_case(plan_name: str, nfe: int, seconds: float, outside: float) -> dict:
    extra = dict(op="end_to_end", plan_name=plan_name, plan="p", problem="480p-81f", shape=[1], num_steps=50,
                 nfe=nfe, backend="triton", wall_s=seconds, model_s=seconds, outside_model_share=outside)
    return {"extra_info": extra, "stats": {"median": seconds}}


def test_cpu_only_report_says_gpu_pending(tmp_path):
    write_run(tmp_path / "cpu", gpu=False, date="2026-01-02T03:04:05+00:00",
              benchmarks=[update_case("eager", 2e-3, shape_name="tiny", gpu=False),
                          update_case("triton", 5e-2, shape_name="tiny", gpu=False)])
    out = tmp_path / "PERFORMANCE.md"
    assert report.main(["--results", str(tmp_path), "--output", str(out), "--plots-dir", str(tmp_path / "plots")]) == 0
    text = out.read_text()
    assert "GPU figures are pending" in text
    assert text.count("pending: no GPU run yet") == len(report.TARGETS)
    assert "CPU (x86_64) (CPU-only), 2026-01-02 03:04 UTC" in text
    assert "triton (interpreter)" in text
    assert "| eager | 2.00 ms |" in text  # host median on CPU
    assert (tmp_path / "plots" / "pnp_update_bandwidth.png").stat().st_size > 0


def test_gpu_targets_from_the_newest_gpu_run(tmp_path):
    write_run(tmp_path / "old", gpu=True, date="2026-01-01T00:00:00+00:00", benchmarks=[update_case("triton", 1.0)])
    write_run(tmp_path / "new", gpu=True, date="2026-02-01T00:00:00+00:00", benchmarks=[
        update_case("eager", 2e-3), update_case("compiled", 4e-4), update_case("triton", 3.5e-4),
        end_to_end_case("baseline", 100, 10.0, 0.001), end_to_end_case("default", 142, 14.6, 0.004),
    ])
    rows = {r[0]: r for r in report.target_rows(report.load_runs([tmp_path]))}
    assert rows[report.TARGETS["bandwidth"]][1] == "triton: lowest 95% over 1 cases"  # 1 GB in 0.35 ms vs 3 TB/s
    assert rows[report.TARGETS["bandwidth"]][2].startswith("met (Test GPU (GPU), 2026-02-01")
    assert rows[report.TARGETS["eager"]][2].startswith("met")  # 5.7x
    assert rows[report.TARGETS["compiled"]][2].startswith("met")  # 1.14x
    assert rows[report.TARGETS["overhead"]][2].startswith("met")  # 0.4%
    assert rows[report.TARGETS["ratio"]][2].startswith("NOT met")  # 1.46x wall vs 1.4484x allowed
    assert rows[report.TARGETS["forward"]][2].startswith("not measured")
