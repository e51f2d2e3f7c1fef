"""bench/report.py on made-up result files: labels, pending GPU figures, target arithmetic, both file kinds."""
import json

from bench import report, report_text


def environment(gpu: bool, date: str) -> dict:
    return {"device": "Test GPU" if gpu else "CPU (x86_64)", "gpu": gpu, "date": date, "torch": "2.x",
            "triton_interpret": not gpu}


def write_benchmark_json(folder, *, gpu: bool, benchmarks: list[dict], date: str) -> None:
    """A pytest-benchmark file as `pytest bench --benchmark-json` writes it."""
    folder.mkdir(parents=True)
    data = {"machine_info": {"pnp_kernels_bench": environment(gpu, date)}, "datetime": date, "benchmarks": benchmarks}
    (folder / "bench.json").write_text(json.dumps(data))


def write_suite_results(folder, *, gpu: bool, records: list[dict], date: str) -> None:
    """results.jsonl and environment.json as the GPU suite writes them."""
    folder.mkdir(parents=True)
    (folder / "environment.json").write_text(json.dumps(environment(gpu, date)))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def update_case(provider: str, seconds: float, *, shape_name="480p-c16", gpu=True) -> dict:
    extra = dict(op="pnp_update", provider=provider, shape=[1, 16, 21, 60, 104], shape_name=shape_name,
                 guidance=True, prev=True, noise="tensor", bytes=10**9, copy_gbps=3000.0,
                 gbps=1.0 / seconds, percent_of_copy=100.0 / seconds / 3000.0)
    if gpu:  # the device time must win over pytest-benchmark's host time
        extra["device_time"] = {"median_ms": seconds * 1e3, "q20_ms": seconds * 900, "q80_ms": seconds * 1100}
        return {"extra_info": extra, "stats": {"median": 99.0}}
    return {"extra_info": extra, "stats": {"median": seconds}}


def end_to_end_record(plan_name: str, nfe: int, seconds: float, outside: float, compiled: bool = False) -> dict:
    return dict(op="end_to_end", plan_name=plan_name, plan="p", problem="480p-81f", compiled=compiled, shape=[1],
                num_steps=15, rounds=3, nfe=nfe, backend="triton", wall_s=[seconds, seconds * 1.01, seconds * 0.99],
                model_s=[seconds] * 3, outside_model_share=outside, seconds=seconds)


def test_cpu_only_report_says_gpu_pending(tmp_path):
    write_benchmark_json(tmp_path / "cpu", gpu=False, date="2026-01-02T03:04:05+00:00",
                         benchmarks=[update_case("eager", 2e-3, shape_name="tiny-c16", gpu=False),
                                     update_case("triton", 5e-2, shape_name="tiny-c16", gpu=False)])
    out = tmp_path / "PERFORMANCE.md"
    assert report.main(["--results", str(tmp_path), "--output", str(out), "--plots-dir", str(tmp_path / "plots")]) == 0
    text = out.read_text()
    assert "GPU figures are pending" in text
    assert text.count(report.PENDING) == len(report.TARGETS)
    assert "CPU (x86_64) (CPU-only), 2026-01-02 03:04 UTC" in text
    assert "triton (interpreter)" in text
    assert "| eager | 2.00 ms | - |" in text  # host median on CPU, no device quantiles
    assert report_text.RUN_COMMAND in text and "SPEC" not in text and "run(command" not in text
    assert (tmp_path / "plots" / "pnp_update_bandwidth.png").stat().st_size > 0


def test_gpu_targets_from_the_newest_gpu_run(tmp_path):
    write_benchmark_json(tmp_path / "old", gpu=True, date="2026-01-01T00:00:00+00:00", benchmarks=[update_case("triton", 1.0)])
    updates = [dict(b["extra_info"], seconds=report.figure_seconds(b)) for b in
               (update_case("eager", 2e-3), update_case("compiled", 4e-4), update_case("triton", 3.5e-4))]
    write_suite_results(tmp_path / "new", gpu=True, date="2026-02-01T00:00:00+00:00", records=updates + [
        end_to_end_record("baseline", 100, 10.0, 0.001), end_to_end_record("published", 142, 14.6, 0.004),
        end_to_end_record("baseline", 100, 8.0, 0.001, compiled=True),
        end_to_end_record("published", 142, 11.4, 0.006, compiled=True),
        dict(op="pnp_update host", provider="triton (launch stubbed)", shape=[1], seconds=45e-6),
        dict(op="pnp_update host", provider="custom op dispatch (launch stubbed)", shape=[1], seconds=700e-6),
    ])
    rows = {}
    for target, figure, status in report.target_rows(report.load_runs([tmp_path])):
        rows.setdefault(target, []).append((figure, status))
    assert rows[report.TARGETS["bandwidth"]] == [("triton: lowest 95% over 1 cases", "met (Test GPU (GPU), 2026-02-01 00:00 UTC)")]
    assert rows[report.TARGETS["eager"]][0][1].startswith("met")  # 5.7x
    assert rows[report.TARGETS["compiled"]][0][1].startswith("met")  # 1.14x
    overhead = rows[report.TARGETS["overhead"]]
    assert [s.split()[0] for _, s in overhead] == ["met", "NOT"]  # 0.4% eager, 0.6% compiled
    ratio = rows[report.TARGETS["ratio"]]
    assert ratio[0][0].startswith("eager: 1.460x") and ratio[0][1].startswith("NOT met")  # vs 1.4484x allowed
    assert ratio[1][0].startswith("compiled blocks: 1.425x") and ratio[1][1].startswith("met")
    assert rows[report.TARGETS["forward"]][0][1].startswith("not measured")
    assert rows[report.TARGETS["host"]][0] == ("triton (launch stubbed): 45.0 us per call", "met (Test GPU (GPU), 2026-02-01 00:00 UTC)")


def test_without_any_run_every_target_is_pending(tmp_path):
    out = tmp_path / "PERFORMANCE.md"
    assert report.main(["--results", str(tmp_path / "none"), "--output", str(out)]) == 0
    text = out.read_text()
    assert text.count(report.PENDING) == len(report.TARGETS) and "No run recorded yet." in text
    assert "| 480p-c16 1x16x21x60x104 | refined iteration |" in text  # the byte table


def test_suite_results_render_with_quantiles(tmp_path):
    record = dict(update_case("cuda", 2e-5)["extra_info"], seconds=2e-5)
    write_suite_results(tmp_path / "run", gpu=True, date="2026-03-01T00:00:00+00:00", records=[record])
    text = report.render(report.load_runs([tmp_path]), {})
    assert "| cuda | 20.0 us | 18.0 us - 22.0 us | 50000.0 |" in text
