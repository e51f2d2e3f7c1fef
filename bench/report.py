"""Build docs/PERFORMANCE.md (tables and plots) from saved pytest-benchmark JSON.

    python -m bench.report [--results DIR_OR_FILE ...] [--output docs/PERFORMANCE.md] [--plots-dir DIR | --no-plots]

Every JSON file under the results folders is read; the files of one folder are one run (one device,
one date). Every figure is shown with its run's device and date; runs without a GPU are labelled
CPU-only, and targets that need a GPU say "pending" until a GPU run is present.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "bench" / "results"
DEFAULT_OUTPUT = REPO / "docs" / "PERFORMANCE.md"
DEFAULT_PLOTS = REPO / "bench" / "results" / "plots"
PROVIDERS = ("eager", "compiled", "triton", "cuda")
FAST_PROVIDERS = ("triton", "cuda")
TARGET_SHAPES = ("wan480p", "wan720p", "ti2v")


@dataclass
class Run:
    """The results of one folder: one device, one date."""

    folder: Path
    environment: dict
    dates: list[str] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)  # extra_info + "seconds" (the figure) per case

    @property
    def gpu(self) -> bool:
        return bool(self.environment.get("gpu"))

    @property
    def label(self) -> str:
        kind = "GPU" if self.gpu else "CPU-only"
        return f"{self.environment.get('device', '?')} ({kind}), {min(self.dates)[:16].replace('T', ' ')} UTC"

    def of(self, op: str) -> list[dict]:
        return [r for r in self.results if r.get("op") == op]


def figure_seconds(bench: dict) -> float | None:
    """Device-event median on a GPU, pytest-benchmark's host median otherwise."""
    device = bench.get("extra_info", {}).get("device_time")
    if device:
        return device["median_ms"] / 1e3
    stats = bench.get("stats") or {}
    return stats.get("median")


def load_runs(paths: list[Path]) -> list[Run]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json"))
        elif path.suffix == ".json":
            files.append(path)
        else:
            raise ValueError(f"--results entry {str(path)!r} is neither a folder nor a .json file")
    runs: dict[Path, Run] = {}
    for file in files:
        data = json.loads(file.read_text())
        environment = data.get("machine_info", {}).get("pnp_kernels_bench")
        if environment is None:  # not a file this suite wrote
            continue
        run = runs.setdefault(file.parent, Run(file.parent, environment))
        run.dates.append(environment.get("date") or data.get("datetime", ""))
        for bench in data.get("benchmarks", []):
            record = dict(bench.get("extra_info", {}))
            record["seconds"] = figure_seconds(bench)
            run.results.append(record)
    ordered = sorted(runs.values(), key=lambda r: max(r.dates), reverse=True)
    return sorted(ordered, key=lambda r: not r.gpu)  # GPU runs first, newest first within each kind


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def variant_name(r: dict) -> str:
    return f"{'guided' if r['guidance'] else 'unguided'}, {'prev' if r['prev'] else 'first'}, {r['noise']} noise"


def update_rows(run: Run) -> list[list[str]]:
    cases: dict[tuple, dict[str, dict]] = {}
    for r in run.of("pnp_update"):
        cases.setdefault((r["shape_name"], r["guidance"], r["prev"], r["noise"]), {})[r["provider"]] = r
    rows = []
    for (shape_name, *_), by_provider in cases.items():
        eager = by_provider.get("eager", {}).get("seconds")
        for provider in PROVIDERS:
            r = by_provider.get(provider)
            if r is None:
                continue
            interpreted = provider == "triton" and run.environment.get("triton_interpret")
            speedup = eager / r["seconds"] if eager and r["seconds"] else None
            rows.append([
                shape_name + " " + "x".join(map(str, r["shape"])), variant_name(r),
                provider + (" (interpreter)" if interpreted else ""), fmt_time(r["seconds"]),
                fmt(r.get("gbps"), ".1f"), fmt(r.get("percent_of_copy"), ".0f", "%"), fmt(speedup, ".1f", "x"),
            ])
    return rows


def e2e_pair(run: Run) -> tuple[dict | None, dict | None]:
    by_plan = {r["plan_name"]: r for r in run.of("end_to_end")}
    return by_plan.get("baseline"), by_plan.get("default")


TARGETS = {
    "bandwidth": "pnp_update >= 80% of copy bandwidth (Wan 480p/720p, C=16/48)",
    "eager": "pnp_update >= 5x eager reference",
    "compiled": "pnp_update faster than torch.compile of the reference",
    "overhead": "sampler overhead < 0.5% of a refined run (Wan2.1-1.3B, 480p/81f)",
    "ratio": "refined wall time <= NFE ratio x 1.02 of baseline",
    "forward": "transformer forward TFLOP/s, best backend vs native",
}


def target_rows(runs: list[Run]) -> list[list[str]]:
    """SPEC §6 targets against the newest GPU run; pending without one."""
    gpu = next((r for r in runs if r.gpu), None)
    if gpu is None:
        return [[t, "-", "pending: no GPU run yet (CPU-only figures below are not assessed)"] for t in TARGETS.values()]
    found: dict[str, list[tuple[str, str]]] = {key: [] for key in TARGETS}  # key -> [(figure, status)]
    updates = [r for r in gpu.of("pnp_update") if r["shape_name"] in TARGET_SHAPES and r["seconds"]]
    for provider in FAST_PROVIDERS:
        mine = [r for r in updates if r["provider"] == provider]
        if not mine:
            continue
        lowest = min(r["percent_of_copy"] for r in mine)
        found["bandwidth"].append((f"{provider}: lowest {lowest:.0f}% over {len(mine)} cases", _met(lowest >= 80)))
        for other, met in (("eager", lambda x: x >= 5.0), ("compiled", lambda x: x > 1.0)):
            speedups = [o["seconds"] / r["seconds"] for r in mine for o in updates if o["provider"] == other and _same_case(o, r)]
            if speedups:
                found[other].append((f"{provider}: lowest {min(speedups):.2f}x over {len(speedups)} cases", _met(met(min(speedups)))))
    baseline, default = e2e_pair(gpu)
    if default:
        share = default["outside_model_share"]
        found["overhead"].append((f"{share:.3%} ({default['problem']}, {default['num_steps']} steps)", _met(share < 0.005)))
    if baseline and default:
        allowed = default["nfe"] / baseline["nfe"] * 1.02
        ratio = default["seconds"] / baseline["seconds"]
        found["ratio"].append((f"{ratio:.3f}x wall vs {allowed:.3f}x allowed", _met(ratio <= allowed)))
    forwards = [r for r in gpu.of("transformer_forward") if r.get("tflops")]
    if forwards:
        best = max(forwards, key=lambda r: r["tflops"])
        native = [r["tflops"] for r in forwards if r["backend"] == "native" and not r["compiled"] and r["problem"] == best["problem"]]
        found["forward"].append((
            f"{best['problem']}: {best['backend']}{' compiled' if best['compiled'] else ''} {best['tflops']:.0f} TFLOP/s, "
            f"native {fmt(native[0] if native else None, '.0f')}", "reported",
        ))
    rows = []
    for key, target in TARGETS.items():
        for figure, status in found[key] or [("-", "not measured (skipped or out of time)")]:
            rows.append([target, figure, f"{status} ({gpu.label})"])
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _same_case(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("shape_name", "guidance", "prev", "noise"))


def run_sections(run: Run, plot_links: dict[str, str]) -> list[str]:
    lines = [f"## {run.label}", ""]
    env = run.environment
    if not run.gpu:
        lines += ["**CPU-only figures** (tiny shapes, host timing; Triton runs in its interpreter): they show that",
                  "the suite works, not how fast anything is on a GPU.", ""]
    lines += [f"Versions: torch {env.get('torch')}, CUDA {env.get('cuda') or '-'}, driver {env.get('driver') or '-'}, "
              f"triton {env.get('triton') or '-'}, diffusers {env.get('diffusers') or '-'}, pnp_kernels "
              f"{env.get('pnp_kernels') or '-'}; results in `{_display_path(run.folder)}`.", ""]
    timing = "device time (CUDA events, median)" if run.gpu else "host time (median), CPU-only"
    rows = update_rows(run)
    if rows:
        copy = statistics.median(r["copy_gbps"] for r in run.of("pnp_update"))
        lines += [f"### pnp_update ({timing})", "",
                  f"Copy ceiling measured in this run: {copy:.1f} GB/s (bytes read + written).", ""]
        lines += table(["shape", "variant", "provider", "time", "GB/s", "% of copy", "vs eager"], rows) + [""]
    sampler = run.of("sampler_overhead")
    if sampler:
        lines += ["### Sampler overhead (host wall time)", "",
                  f"Default plan {sampler[0]['plan']}, {sampler[0]['num_steps']} steps, latents "
                  f"{'x'.join(map(str, sampler[0]['shape']))}, stub of fixed cost vs the same number of bare stub calls.", ""]
        lines += table(
            ["backend", "noise", "NFE", "stub", "refined", "bare calls", "overhead / NFE", "share of run"],
            [[r["backend"], r["noise"], r["nfe"], f"{r['stub_ms']} ms", fmt_time(r["refined_s"]), fmt_time(r["bare_s"]),
              fmt(r["overhead_per_nfe_ms"], ".3f", " ms"), fmt(100 * r["overhead_share"], ".2f", "%")] for r in sampler],
        ) + [""]
    forwards = run.of("transformer_forward")
    if forwards:
        native = {(r["problem"], r["compiled"]): r["seconds"] for r in forwards if r["backend"] == "native"}
        lines += [f"### Transformer forward, batch 1 ({timing})", ""]
        lines += table(
            ["problem", "tokens", "attention backend", "compiled", "time / forward", "TFLOP/s", "vs native"],
            [[r["problem"], r["tokens"], r["backend"], "yes" if r["compiled"] else "no", fmt_time(r["seconds"]),
              fmt(r.get("tflops"), ".1f" if run.gpu else ".2g"),
              fmt(native[(r["problem"], False)] / r["seconds"] if native.get((r["problem"], False)) and r["seconds"] else None, ".2f", "x")]
             for r in forwards],
        ) + [""]
    baseline, default = e2e_pair(run)
    if baseline or default:
        lines += ["### End to end, no VAE decode (host wall time)", ""]
        rows = []
        for r in (x for x in (baseline, default) if x):
            nfe_ratio = r["nfe"] / baseline["nfe"] if baseline else None
            wall_ratio = r["seconds"] / baseline["seconds"] if baseline else None
            rows.append([r["plan_name"], r["plan"], r["num_steps"], r["nfe"], fmt_time(r["seconds"]), fmt(nfe_ratio, ".3f"),
                         fmt(wall_ratio, ".3f"), fmt(wall_ratio / nfe_ratio if wall_ratio else None, ".3f"),
                         fmt(100 * r["outside_model_share"], ".2f", "%"), r["backend"]])
        lines += table(["plan", "ranges", "steps", "NFE", "wall time", "NFE ratio", "wall ratio", "wall / NFE ratio",
                        "outside model", "update backend"], rows) + [""]
    guidance = run.of("guidance_mode")
    if guidance:
        lines += ["Guidance: cond and uncond as one batch-2 forward vs two sequential forwards "
                  f"({guidance[0]['num_steps']} plain steps):", ""]
        lines += table(["guidance", "NFE", "time / NFE"], [[r["guidance"], r["nfe"], fmt_time(r["seconds"] / r["nfe"] if r["seconds"] else None)] for r in guidance]) + [""]
    for title, link in plot_links.items():
        lines += [f"![{title}]({link})", ""]
    return lines


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def make_plots(run: Run, plots_dir: Path, output: Path) -> dict[str, str]:
    """Bandwidth vs copy ceiling, per-forward time per attention backend, refined vs baseline time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    where = "" if run.gpu else " - CPU-only, tiny shapes"
    title_tail = f"\n{run.environment.get('device')}, {min(run.dates)[:10]}{where}"
    links: dict[str, str] = {}

    def save(fig, name: str, title: str) -> None:
        path = plots_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        links[title] = os.path.relpath(path, output.parent)

    updates = [r for r in run.of("pnp_update") if r.get("gbps")]
    if updates:
        cases = list(dict.fromkeys((r["shape_name"], variant_name(r)) for r in updates))
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(cases) + 2))
        height = 0.8 / len(PROVIDERS)
        for i, provider in enumerate(PROVIDERS):
            by_case = {(r["shape_name"], variant_name(r)): r["gbps"] for r in updates if r["provider"] == provider}
            if not by_case:
                continue
            ys = [j + i * height for j, case in enumerate(cases) if case in by_case]
            ax.barh(ys, [by_case[c] for c in cases if c in by_case], height=height, label=provider, color=f"C{i}")
        ax.axvline(statistics.median(r["copy_gbps"] for r in updates), color="black", linestyle="--", label="copy ceiling")
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(cases))], [f"{s}: {v}" for s, v in cases], fontsize=7)
        ax.set_xlabel("achieved GB/s (bytes that must move / time)")
        ax.set_title("pnp_update bandwidth" + title_tail)
        ax.legend(fontsize=7)
        save(fig, "pnp_update_bandwidth.png", "pnp_update achieved bandwidth vs copy ceiling")
    forwards = [r for r in run.of("transformer_forward") if r["seconds"]]
    if forwards:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(forwards) + 2))
        names = [f"{r['problem']} {r['backend']}{' (compiled)' if r['compiled'] else ''}" for r in forwards]
        ax.barh(names, [r["seconds"] for r in forwards])
        ax.set_xlabel("seconds per forward (batch 1)")
        ax.set_title("Wan2.1-1.3B-shaped transformer forward per attention backend" + title_tail)
        save(fig, "transformer_forward.png", "transformer forward time per attention backend")
    baseline, default = e2e_pair(run)
    if baseline and default:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(["baseline", "default plan", "baseline x NFE ratio"],
               [baseline["seconds"], default["seconds"], baseline["seconds"] * default["nfe"] / baseline["nfe"]],
               color=["tab:gray", "tab:blue", "tab:orange"])
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"Refined vs baseline, {default['problem']}" + title_tail)
        save(fig, "end_to_end.png", "refined vs baseline wall time")
    return links


def render(runs: list[Run], plot_links: dict[str, str]) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `python -m bench.report` from the pytest-benchmark JSON in `bench/results/`; do not edit by hand.",
        "Targets are SPEC §6. Speed is measured by the benchmarks in `bench/`, never asserted by timed tests.",
        "",
        "Reproduce: on a CPU, `pytest bench/ --benchmark-only --benchmark-json=bench/results/<date>-cpu/bench.json`",
        "(tiny shapes); on one H100/H200, `bench/gpu_suite.sh` (GPU correctness tests and every GPU benchmark in",
        "about 10 minutes, Wan shapes). A GPU machine without diffusers or network needs the diffusers wheel:",
        "run `bench/fetch_wheels.sh` on a machine with network, carry `bench/wheels/` (git-ignored) along, and",
        "the suite installs it. Then `python -m bench.report` over the results.",
        "",
    ]
    if not any(r.gpu for r in runs):
        lines += ["**GPU figures are pending**: no GPU run has been recorded yet. Every figure below is CPU-only.", ""]
    lines += ["## Targets (SPEC §6)", ""] + table(["target", "figure", "status"], target_rows(runs)) + [""]
    lines += ["## Runs", ""] + table(
        ["device", "kind", "date (UTC)", "torch", "CUDA", "driver", "triton", "cases"],
        [[r.environment.get("device"), "GPU" if r.gpu else "CPU-only", min(r.dates)[:16].replace("T", " "),
          r.environment.get("torch"), r.environment.get("cuda") or "-", r.environment.get("driver") or "-",
          r.environment.get("triton") or "-", len(r.results)] for r in runs],
    ) + [""]
    lines += [
        "How figures are taken: pnp_update GB/s counts the bytes the op must move (`bytes_moved` in",
        "`bench/test_pnp_update.py`) over its median time; the copy ceiling is a device-to-device copy timed in",
        "the same run. Transformer TFLOP/s counts linear layers and attention (`forward_flops` in",
        "`bench/wan_model.py`). GPU times are CUDA-event medians with L2 flushed before each call.",
        "",
    ]
    for i, run in enumerate(runs):
        lines += run_sections(run, plot_links if i == 0 else {})
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", default=[DEFAULT_RESULTS], help="folders or .json files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--plots-dir", type=Path, default=DEFAULT_PLOTS)
    parser.add_argument("--no-plots", action="store_true", help="tables only (e.g. on the GPU machine)")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    if not runs:
        parser.error(f"no results written by this suite under {[str(p) for p in args.results]}")
    links = {} if args.no_plots else make_plots(runs[0], args.plots_dir, args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(runs, links))
    print(f"wrote {args.output} from {len(runs)} run(s): " + "; ".join(r.label for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
