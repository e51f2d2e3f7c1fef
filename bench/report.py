"""Build docs/PERFORMANCE.md (tables and plots) from saved benchmark results.

    python -m bench.report [--results DIR_OR_FILE ...] [--output docs/PERFORMANCE.md] [--plots-dir DIR | --no-plots]

Reads, under each results folder, pytest-benchmark JSON files (``pytest bench/ --benchmark-json=...``)
and the GPU suite's results.jsonl (one case per line, with environment.json beside it). The files of
one folder are one run (one device, one date). Every figure is shown with its run's device and date;
runs without a GPU are labelled CPU-only, and targets say "pending" until a GPU run is present.
"""
# Over 400 lines on purpose: one document's generator, a function per section, read top to bottom.
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.report_text import accounting_section, compile_section, cuda_kernel_section, suite_section, table
from bench.update_cases import SHAPES

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "bench" / "results"
DEFAULT_OUTPUT = REPO / "docs" / "PERFORMANCE.md"
DEFAULT_PLOTS = REPO / "bench" / "results" / "plots"
PROVIDERS = ("eager", "compiled", "triton", "cuda")
FAST_PROVIDERS = ("triton", "cuda")
TARGET_SHAPES = tuple(SHAPES["full"])
PENDING = "pending: no GPU run yet"


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
    """Device median on a GPU, pytest-benchmark's host median otherwise."""
    device = bench.get("extra_info", {}).get("device_time")
    if device:
        return device["median_ms"] / 1e3
    stats = bench.get("stats") or {}
    return stats.get("median")


def _benchmark_json(file: Path) -> tuple[dict | None, list[dict]]:
    data = json.loads(file.read_text())
    environment = data.get("machine_info", {}).get("pnp_kernels_bench") if isinstance(data, dict) else None
    if environment is None:  # not a file this suite wrote (environment.json, for one)
        return None, []
    records = [dict(b.get("extra_info", {}), seconds=figure_seconds(b)) for b in data.get("benchmarks", [])]
    return environment, records


def _results_lines(file: Path) -> tuple[dict | None, list[dict]]:
    environment_file = file.with_name("environment.json")
    if not environment_file.exists():
        return None, []
    records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return json.loads(environment_file.read_text()), records


def load_runs(paths: list[Path]) -> list[Run]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl"))
        elif path.suffix in (".json", ".jsonl"):
            files.append(path)
        else:
            raise ValueError(f"--results entry {str(path)!r} is neither a folder nor a .json / .jsonl file")
    runs: dict[Path, Run] = {}
    for file in files:
        environment, records = (_results_lines if file.suffix == ".jsonl" else _benchmark_json)(file)
        if environment is None:
            continue
        run = runs.setdefault(file.parent, Run(file.parent, environment))
        run.dates.append(environment.get("date", ""))
        run.results += records
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


def variant_name(r: dict) -> str:
    return f"{'guided' if r['guidance'] else 'unguided'}, {'prev' if r['prev'] else 'first'}, {r['noise']} noise"


def _spread(r: dict) -> str:
    """q20-q80 of the device time, where the run has it."""
    device = r.get("device_time")
    return f"{fmt_time(device['q20_ms'] / 1e3)} - {fmt_time(device['q80_ms'] / 1e3)}" if device else "-"


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
                provider + (" (interpreter)" if interpreted else ""), fmt_time(r["seconds"]), _spread(r),
                fmt(r.get("gbps"), ".1f"), fmt(r.get("percent_of_copy"), ".0f", "%"), fmt(speedup, ".1f", "x"),
            ])
    return rows


def e2e_pair(run: Run, compiled: bool) -> tuple[dict | None, dict | None]:
    by_plan = {r["plan_name"]: r for r in run.of("end_to_end") if r["compiled"] == compiled}
    return by_plan.get("baseline"), by_plan.get("published")


TARGETS = {
    "bandwidth": "pnp_update >= 80% of copy bandwidth (Wan 480p/720p, C=16/48)",
    "eager": "pnp_update >= 5x eager reference",
    "compiled": "pnp_update faster than torch.compile of the reference",
    "overhead": "sampler work outside the model < 0.5% of a refined run (Wan2.1-1.3B, 480p/81f)",
    "ratio": "refined wall time <= NFE ratio x 1.02 of baseline",
    "forward": "transformer forward TFLOP/s, best backend vs native",
    "host": "host time of one pnp_update call < 60 us (kernel launch stubbed: the dispatcher alone)",
}
HOST_TARGET_S = 60e-6
# The eager call's record in bench/test_op_host_time.py; its custom-op record is the path torch.compile
# traces away, reported in the host-time table but not held to the target.
HOST_TARGET_PROVIDER = "triton (launch stubbed)"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _same_case(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("shape_name", "guidance", "prev", "noise"))


def _update_targets(updates: list[dict], found: dict) -> None:
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


def _end_to_end_targets(run: Run, found: dict) -> None:
    for compiled in (False, True):
        mode = "compiled blocks" if compiled else "eager"
        baseline, published = e2e_pair(run, compiled)
        if published:
            share = published["outside_model_share"]
            figure = f"{mode}: {share:.3%} ({published['problem']}, {published['num_steps']} steps)"
            found["overhead"].append((figure, _met(share < 0.005)))
        if baseline and published and baseline["seconds"] and published["seconds"]:
            allowed = published["nfe"] / baseline["nfe"] * 1.02
            ratio = published["seconds"] / baseline["seconds"]
            figure = f"{mode}: {ratio:.3f}x wall vs {allowed:.3f}x allowed ({published['rounds']} rounds)"
            found["ratio"].append((figure, _met(ratio <= allowed)))


def target_rows(runs: list[Run]) -> list[list[str]]:
    """The targets against the newest GPU run; pending without one."""
    gpu = next((r for r in runs if r.gpu), None)
    if gpu is None:
        return [[t, "-", PENDING] for t in TARGETS.values()]
    found: dict[str, list[tuple[str, str]]] = {key: [] for key in TARGETS}  # key -> [(figure, status)]
    _update_targets([r for r in gpu.of("pnp_update") if r["shape_name"] in TARGET_SHAPES and r["seconds"]], found)
    _end_to_end_targets(gpu, found)
    forwards = [r for r in gpu.of("transformer_forward") if r.get("tflops")]
    if forwards:
        best = max(forwards, key=lambda r: r["tflops"])
        native = [r["tflops"] for r in forwards if r["backend"] == "native" and not r["compiled"] and r["problem"] == best["problem"]]
        found["forward"].append((
            f"{best['problem']}: {best['backend']}{' compiled' if best['compiled'] else ''} {best['tflops']:.0f} TFLOP/s, "
            f"native {fmt(native[0] if native else None, '.0f')}", "reported",
        ))
    for r in gpu.of("pnp_update host"):
        if r["seconds"] and r["provider"] == HOST_TARGET_PROVIDER:
            found["host"].append((f"{r['provider']}: {fmt_time(r['seconds'])} per call", _met(r["seconds"] < HOST_TARGET_S)))
    rows = []
    for key, target in TARGETS.items():
        for figure, status in found[key] or [("-", "not measured (skipped or out of time)")]:
            rows.append([target, figure, f"{status} ({gpu.label})"])
    return rows


def _update_section(run: Run, timing: str) -> list[str]:
    rows = update_rows(run)
    if not rows:
        return []
    copy = statistics.median(r["copy_gbps"] for r in run.of("pnp_update"))
    return [f"### pnp_update ({timing})", "",
            f"Copy ceiling measured in this run: {copy:.1f} GB/s (bytes read + written).", ""] + table(
        ["shape", "variant", "provider", "median", "q20 - q80", "GB/s", "% of copy", "vs eager"], rows) + [""]


HOST_TIME_OPS = {
    "pnp_update launch": "public call on the eager launch path, real kernel launch (device kept busy)",
    "pnp_update host": "public call with the kernel launch stubbed out (the dispatcher alone)",
}


def _host_section(run: Run) -> list[str]:
    rows = [[r["op"], HOST_TIME_OPS[op], r["provider"], "x".join(map(str, r["shape"])), fmt_time(r["seconds"])]
            for op in HOST_TIME_OPS for r in run.of(op)]
    if not rows:
        return []
    return ["### Host time per update (host wall time, median per call)", ""] + table(
        ["figure", "what", "backend", "latents", "per call"], rows) + [""]


def _sampler_section(run: Run) -> list[str]:
    sampler = run.of("sampler_overhead")
    if not sampler:
        return []
    return ["### Sampler overhead (host wall time)", "",
            f"Published plan {sampler[0]['plan']}, {sampler[0]['num_steps']} steps, latents "
            f"{'x'.join(map(str, sampler[0]['shape']))}, stub of fixed cost vs the same number of bare stub calls.", ""] + table(
        ["backend", "noise", "NFE", "stub", "refined", "bare calls", "overhead / NFE", "share of run"],
        [[r["backend"], r["noise"], r["nfe"], f"{r['stub_ms']} ms", fmt_time(r["refined_s"]), fmt_time(r["bare_s"]),
          fmt(r["overhead_per_nfe_ms"], ".3f", " ms"), fmt(100 * r["overhead_share"], ".2f", "%")] for r in sampler],
    ) + [""]


def _transformer_section(run: Run, timing: str) -> list[str]:
    forwards = run.of("transformer_forward")
    if not forwards:
        return []
    native = {r["problem"]: r["seconds"] for r in forwards if r["backend"] == "native" and not r["compiled"]}
    return [f"### Transformer forward, batch 1 ({timing})", ""] + table(
        ["problem", "tokens", "attention backend", "compiled blocks", "time / forward", "TFLOP/s", "vs native eager"],
        [[r["problem"], r["tokens"], r["backend"], "yes" if r["compiled"] else "no", fmt_time(r["seconds"]),
          fmt(r.get("tflops"), ".1f" if run.gpu else ".2g"),
          fmt(native[r["problem"]] / r["seconds"] if native.get(r["problem"]) and r["seconds"] else None, ".2f", "x")]
         for r in forwards],
    ) + [""]


def _end_to_end_section(run: Run) -> list[str]:
    rows = []
    for compiled in (False, True):
        baseline, published = e2e_pair(run, compiled)
        for r in (x for x in (baseline, published) if x):
            nfe_ratio = r["nfe"] / baseline["nfe"] if baseline else None
            wall_ratio = r["seconds"] / baseline["seconds"] if baseline and baseline["seconds"] and r["seconds"] else None
            walls = r["wall_s"]
            rows.append([r["plan_name"], r["plan"], "yes" if compiled else "no", r["num_steps"], r["nfe"], len(walls),
                         fmt_time(r["seconds"]), fmt(100 * (max(walls) - min(walls)) / min(walls), ".1f", "%"),
                         fmt(nfe_ratio, ".3f"), fmt(wall_ratio, ".3f"),
                         fmt(wall_ratio / nfe_ratio if wall_ratio else None, ".3f"),
                         fmt(100 * r["outside_model_share"], ".2f", "%"), r["backend"]])
    lines = []
    if rows:
        lines += ["### End to end, unguided, no VAE decode (host wall time)", ""] + table(
            ["plan", "ranges", "compiled blocks", "steps", "NFE", "rounds", "median wall", "spread (max/min - 1)",
             "NFE ratio", "wall ratio", "wall / NFE ratio", "outside model", "update backend"], rows) + [""]
    guidance = run.of("guidance_mode")
    if guidance:
        lines += ["Guidance: cond and uncond as one batch-2 forward vs two sequential forwards "
                  f"({guidance[0]['num_steps']} plain steps):", ""]
        lines += table(["guidance", "NFE", "time / NFE"],
                       [[r["guidance"], r["nfe"], fmt_time(r["seconds"] / r["nfe"] if r["seconds"] else None)]
                        for r in guidance]) + [""]
    return lines


def run_sections(run: Run, plot_links: dict[str, str]) -> list[str]:
    lines = [f"## {run.label}", ""]
    env = run.environment
    if not run.gpu:
        lines += ["**CPU-only figures** (tiny shapes, host timing; Triton runs in its interpreter): they show that",
                  "the suite works, not how fast anything is on a GPU.", ""]
    lines += [f"Versions: torch {env.get('torch')}, CUDA {env.get('cuda') or '-'}, driver {env.get('driver') or '-'}, "
              f"triton {env.get('triton') or '-'}, diffusers {env.get('diffusers') or '-'}, pnp_kernels "
              f"{env.get('pnp_kernels') or '-'}; results in `{_display_path(run.folder)}`.", ""]
    timing = ("device time: CUDA-graph replays (update), CUDA events (forward); median" if run.gpu
              else "host time (median), CPU-only")
    lines += _update_section(run, timing) + _host_section(run) + _sampler_section(run)
    lines += _transformer_section(run, timing) + _end_to_end_section(run)
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
    baseline, published = e2e_pair(run, compiled=False)
    if baseline and published and baseline["seconds"] and published["seconds"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(["baseline", "published plan", "baseline x NFE ratio"],
               [baseline["seconds"], published["seconds"], baseline["seconds"] * published["nfe"] / baseline["nfe"]],
               color=["tab:gray", "tab:blue", "tab:orange"])
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"Refined vs baseline, {published['problem']}" + title_tail)
        save(fig, "end_to_end.png", "refined vs baseline wall time")
    return links


def render(runs: list[Run], plot_links: dict[str, str]) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `python -m bench.report` from the results in `bench/results/`; do not edit by hand.",
        "Speed is measured by the benchmarks in `bench/`, never asserted by timed tests.",
        "",
    ]
    if not any(r.gpu for r in runs):
        lines += ["**GPU figures are pending**: no GPU run has been recorded yet; no figure below is a GPU figure.", ""]
    lines += ["## Targets", ""] + table(["target", "figure", "status"], target_rows(runs)) + [""]
    lines += suite_section() + accounting_section() + cuda_kernel_section() + compile_section()
    lines += ["## Runs", ""] + (["No run recorded yet.", ""] if not runs else table(
        ["device", "kind", "date (UTC)", "torch", "CUDA", "driver", "triton", "cases"],
        [[r.environment.get("device"), "GPU" if r.gpu else "CPU-only", min(r.dates)[:16].replace("T", " "),
          r.environment.get("torch"), r.environment.get("cuda") or "-", r.environment.get("driver") or "-",
          r.environment.get("triton") or "-", len(r.results)] for r in runs],
    ) + [""])
    lines += [
        "How figures are taken: pnp_update GB/s counts the bytes the op must move over its median device",
        "time; the copy ceiling is a device-to-device copy timed the same way in the same run. Transformer",
        "TFLOP/s counts linear layers and attention (`forward_flops` in `bench/wan_model.py`). End-to-end",
        "figures are host wall time of whole sampling runs, the median of the rounds.",
        "",
    ]
    for i, run in enumerate(runs):
        lines += run_sections(run, plot_links if i == 0 else {})
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", default=[DEFAULT_RESULTS], help="folders or result files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--plots-dir", type=Path, default=DEFAULT_PLOTS)
    parser.add_argument("--no-plots", action="store_true", help="tables only (e.g. on the GPU machine)")
    args = parser.parse_args(argv)
    runs = load_runs([p for p in args.results if p.exists()])
    links = {} if args.no_plots or not runs else make_plots(runs[0], args.plots_dir, args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(runs, links))
    print(f"wrote {args.output} from {len(runs)} run(s)" + "".join(f"; {r.label}" for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
