"""The evaluation report: a JSON with every per-sample value and the paired summaries, a markdown table,
a plot of the metric differences with their intervals, and a contact sheet of the most and least changed
samples. How to read it: docs/EVAL.md."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_mean, paired_differences
from .metrics import FLICKER_FLAG, Metric
from .runner import Sample, write_atomically

BETTER = {"higher": "higher", "lower": "lower", "neutral": "-"}


def _values(records: Sequence[dict], label: str, key: str) -> list[float]:
    return [record["runs"][label]["metrics"][key] for record in records]


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def summarize(records: Sequence[dict], baseline: str, labels: Sequence[str], metrics: Sequence[Metric],
              header: dict) -> dict:
    """Per setting and metric: both means and the mean paired difference (setting - baseline) with its
    95% bootstrap interval; NFEs, wall time and flicker flags; and every sample's values and differences."""
    def cost(label):
        return {"nfe_mean": _mean([r["runs"][label]["nfe"] for r in records]),
                "time_s_mean": _mean([r["runs"][label]["time_s"] for r in records]),
                "flicker_flagged": int(sum(v > FLICKER_FLAG for v in _values(records, label, "flicker")))}

    comparisons = {}
    for label in labels:
        rows = {}
        for metric in metrics:
            before = np.array(_values(records, baseline, metric.name), dtype=np.float64)
            after = np.array(_values(records, label, metric.name), dtype=np.float64)
            paired = np.isfinite(before) & np.isfinite(after)  # both means over the same samples
            rows[metric.name] = {"baseline_mean": _mean(before[paired]), "setting_mean": _mean(after[paired]),
                                 "difference": bootstrap_mean(paired_differences(after, before)).to_dict()}
        comparisons[label] = {**cost(label), "metrics": rows}
    samples = []
    for record in records:
        differences = {label: {m.name: record["runs"][label]["metrics"][m.name]
                               - record["runs"][baseline]["metrics"][m.name] for m in metrics} for label in labels}
        samples.append({**record, "differences": differences})
    return {
        **header, "num_samples": len(records), "baseline": {"label": baseline, **cost(baseline)},
        "bootstrap": {"confidence": 0.95, "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        "flicker_flag": FLICKER_FLAG,
        "metrics": [{"name": m.name, "direction": m.direction, "unit": m.unit, "description": m.description}
                    for m in metrics],
        "comparisons": comparisons, "samples": samples,
    }


def _number(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.4g}"


def _run_line(run: dict, num_samples: int) -> str:
    processes = f"{run['processes']} processes" if run["processes"] > 1 else "one process"
    earlier = num_samples - run["computed"]
    read_back = f", {earlier} read back from an earlier run." if earlier else "."
    return (f"Wall time {run['wall_s']:.1f} s, {run['samples_per_s']:.3g} samples/s: {run['computed']} samples "
            f"computed by this run on {processes}{read_back}")


def markdown(summary: dict) -> str:
    """The report as markdown: one table per setting."""
    n = summary["num_samples"]
    base = summary["baseline"]
    samples = (f"{summary['num_prompts']} prompt(s) x {summary['num_seeds']} seed(s)" if summary["num_prompts"]
               else f"one per seed, {summary['num_seeds']} seed(s)")
    lines = [
        f"# P&P evaluation: {summary['model']}",
        "",
        f"{n} samples ({samples}); each setting is compared with the baseline (no refinement, {summary['steps']} "
        "steps) from the same initial noise.",
    ]
    if summary.get("notice"):
        lines.append(f"{summary['notice']}")
    lines += [
        "Differences are setting minus baseline, the mean over samples with a 95% percentile-bootstrap interval "
        f"({summary['bootstrap']['resamples']} resamples, seed {summary['bootstrap']['seed']}); * marks an interval "
        "that excludes 0. Metric definitions and directions: docs/EVAL.md.",
        "",
        f"Baseline: {_number(base['nfe_mean'])} NFE, {base['time_s_mean']:.2f} s per sample, "
        f"flicker flagged in {base['flicker_flagged']} of {n} clips.",
    ]
    if "run" in summary:
        lines.append(_run_line(summary["run"], n))
    for label, comparison in summary["comparisons"].items():
        options = summary.get("fingerprint", {}).get("settings", {}).get(label, {})
        other = ", ".join(f"{name} {value}" for name, value in options.items() if name not in ("plan", "tau"))
        lines += [
            "", f"## {label}", "",
            f"{_number(comparison['nfe_mean'])} NFE, {comparison['time_s_mean']:.2f} s per sample; flicker flagged "
            f"in {comparison['flicker_flagged']} of {n} clips." + (f" Other P&P options: {other}." if other else ""),
            "",
            "| metric | better | baseline | setting | difference [95% CI] | n |",
            "|---|---|---|---|---|---|",
        ]
        for metric in summary["metrics"]:
            row = comparison["metrics"][metric["name"]]
            d = row["difference"]
            excludes_zero = d["n"] > 0 and (d["low"] > 0 or d["high"] < 0)
            marker = " *" if excludes_zero else ""
            interval = f"{_number(d['mean'])} [{_number(d['low'])}, {_number(d['high'])}]{marker}"
            lines.append(f"| {metric['name']} | {BETTER[metric['direction']]} | {_number(row['baseline_mean'])} | "
                         f"{_number(row['setting_mean'])} | {interval} | {d['n']} |")
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)  # margins set by hand: automatic layouts are slow


def _save(figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomically(path, buffer.getvalue())


def plot_differences(summary: dict, path: Path) -> None:
    """One panel per metric: each setting's mean difference with its interval, and a line at 0."""
    metrics, labels = summary["metrics"], list(summary["comparisons"])
    columns = 4
    rows = -(-len(metrics) // columns)
    width, height = 3.2 * columns, 0.6 + (0.35 * len(labels) + 0.9) * rows
    figure = _figure(width, height)
    label_width = 0.06 * max(len(label) for label in labels)  # inches, at font size 7
    figure.subplots_adjust(left=(label_width + 0.15) / width, right=0.98, bottom=0.3 / height,
                           top=1 - 0.55 / height, wspace=0.12, hspace=0.55 * 2 / (0.35 * len(labels) + 0.9))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for y, label in enumerate(labels):
            d = summary["comparisons"][label]["metrics"][metric["name"]]["difference"]
            if d["n"]:
                ax.errorbar(d["mean"], y, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o", capsize=3)
        ax.axvline(0.0, color="0.5", linewidth=0.8)
        ax.set_yticks(range(len(labels)), labels if ax in axes[::columns] else [""] * len(labels), fontsize=7)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_title(f"{metric['name']} ({BETTER[metric['direction']]} is better)"
                     if metric["direction"] != "neutral" else metric["name"], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    figure.suptitle(f"setting - baseline, mean and 95% bootstrap interval ({summary['num_samples']} samples)",
                    fontsize=9)
    _save(figure, path)


def _strip(thumbs: np.ndarray) -> np.ndarray:
    """Frames of one run side by side, a white gap between them."""
    gap = np.full((thumbs.shape[1], 2, 3), 255, dtype=np.uint8)
    return np.concatenate([part for frame in thumbs for part in (frame, gap)][:-1], axis=1)


def contact_sheet(summary: dict, samples: Sequence[Sample], thumbnails: Sequence[np.ndarray], path: Path) -> None:
    """For each setting, the samples it changed most and least (by frame_change): baseline frames on the
    left, the setting's frames on the right. ``thumbnails[i]`` holds sample i's runs, baseline first."""
    labels = list(summary["comparisons"])
    panels = []
    for index, label in enumerate(labels, start=1):
        change = [record["runs"][label]["metrics"]["frame_change"] for record in summary["samples"]]
        order = np.argsort(change, kind="stable")
        picks = [("most", order[-1])] + ([("least", order[0])] if len(order) > 1 else [])
        for which, i in picks:
            gap = np.full((thumbnails[i].shape[2], 8, 3), 255, dtype=np.uint8)
            image = np.concatenate([_strip(thumbnails[i][0]), gap, _strip(thumbnails[i][index])], axis=1)
            title = (f"{label}: {which} changed, seed {samples[i].seed}"
                     + (f", '{samples[i].prompt[:40]}'" if samples[i].prompt else "")
                     + f" (frame change {change[i]:.3f})   baseline | setting")
            panels.append((image, title))
    height, width = panels[0][0].shape[:2]
    row = 10 * height / width + 0.35  # inches: the image and its title
    figure = _figure(10, len(panels) * row)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02 / len(panels), top=1 - 0.3 / (len(panels) * row),
                           hspace=0.35 / (row - 0.35))
    for ax, (image, title) in zip(figure.subplots(len(panels), 1, squeeze=False).ravel(), panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    _save(figure, path)


def _strict_json(value):
    """NaN and infinities (undefined metrics) as null: JSON has no NaN."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_report(summary: dict, samples: Sequence[Sample], thumbnails: Sequence[np.ndarray], folder: Path) -> dict:
    """Write report.json, report.md, differences.png and contact_sheet.png; returns their paths by name."""
    folder = Path(folder)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md",
             "plot": folder / "differences.png", "contact_sheet": folder / "contact_sheet.png"}
    write_atomically(paths["json"], (json.dumps(_strict_json(summary), indent=2, allow_nan=False) + "\n").encode())
    write_atomically(paths["markdown"], markdown(summary).encode())
    plot_differences(summary, paths["plot"])
    contact_sheet(summary, samples, thumbnails, paths["contact_sheet"])
    return paths
