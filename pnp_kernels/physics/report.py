"""Tables and decisions of the physics study from its results (docs/PHYSICS_PREREG.md)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..statistics import MeanInterval, bonferroni_level, mean_interval
from .metrics import DIRECTIONS, METRIC_NAMES, TRACKED_ONLY
from .rows import Row, curve_rows, headline_rows, matching_euler, restart_pairs

CURVE_SEEDS = 256  # the curve's rows use the first 256 study seeds (docs/PHYSICS_PREREG.md)

HEADLINE_ORDER = ("2x", "4x", "6x")  # the first of these that passes the gate is the headline model
NON_INFERIORITY = 0.05  # tracked may fall by less than five percentage points for a row to "help"
PRIMARY = ("tracked", "ballistic")


@dataclass(frozen=True)
class Comparison:
    row: Row
    reference: Row
    differences: dict[str, MeanInterval]  # metric -> interval of row - reference

    def verdict(self) -> str:
        """helps / hurts / neutral by the pre-registered rule (row against matched Euler)."""
        tracked, ballistic = self.differences["tracked"], self.differences["ballistic"]
        if (tracked.n > 1 and tracked.high < 0) or (ballistic.n > 1 and ballistic.low > 0):
            return "hurts"
        if ballistic.n > 1 and ballistic.high < 0 and tracked.low > -NON_INFERIORITY:
            return "helps"
        return "neutral"


def load(folder: Path) -> dict[str, dict]:
    """Every checkpoint's results in ``folder``, by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))}


def headline_name(results: dict[str, dict]) -> str | None:
    for name in HEADLINE_ORDER:
        gate = results.get(name, {}).get("gate")
        if gate is None:
            return None  # not judged yet: a later checkpoint cannot be chosen over it
        if gate["passed"]:
            return name
    return None


def reported_headline(results: dict[str, dict]) -> tuple[str | None, bool]:
    """The checkpoint whose headline rows the report shows, and whether it is the registered one (a
    headline run on another checkpoint is a deviation, labelled as such)."""
    name = headline_name(results)
    if name is not None and results[name].get("headline"):
        return name, True
    ran = [n for n, r in results.items() if r.get("headline")]
    return (ran[0], False) if ran else (None, False)


def demo_name(results: dict[str, dict]) -> str | None:
    """The passing checkpoint with the highest gate share of tracked clips (ties: fewer steps)."""
    passing = [(r["gate"]["checks"]["tracked"]["value"], -_steps(name), name) for name, r in results.items()
               if r.get("gate", {}).get("passed")]
    return max(passing)[2] if passing else None


def _steps(name: str) -> float:
    return float(name.rstrip("x")) if name.rstrip("x").replace(".", "").isdigit() else 0.0


def values(result: dict, row: Row, name: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in result["rows"][row.label()]["metrics"][name]], dtype=float)


def compare(result: dict, row: Row, reference: Row, level: float) -> Comparison:
    """Paired differences over seeds; the ball metrics over the seeds tracked in both rows."""
    differences = {name: mean_interval(values(result, row, name) - values(result, reference, name), level)
                   for name in METRIC_NAMES}
    return Comparison(row, reference, differences)


def headline_comparisons(result: dict) -> tuple[list[Comparison], list[Comparison], float]:
    """Each non-Euler row against its matched Euler, and P&P against Restart, at the Bonferroni level."""
    rows = headline_rows()
    against_euler = [r for r in rows if r.kind != "euler"]
    pairs = restart_pairs(rows)
    level = bonferroni_level(len(PRIMARY) * (len(against_euler) + len(pairs)))
    return ([compare(result, r, matching_euler(r, rows), level) for r in against_euler],
            [compare(result, p, r, level) for p, r in pairs], level)


def selected_placement(comparisons: list[Comparison]) -> tuple[Comparison, bool]:
    """The demo's third column: the uniform-grid P&P row that helps most (by the ballistic
    difference; ties: fewer calls), else the one with the highest tracked difference (False)."""
    uniform = [c for c in comparisons if c.row.kind == "pnp" and c.row.shift == 1.0]
    helping = [c for c in uniform if c.verdict() == "helps"]
    if helping:
        return min(helping, key=lambda c: (c.differences["ballistic"].mean, c.row.planned_calls)), True
    return max(uniform, key=lambda c: c.differences["tracked"].mean), False


def rate_cell(interval: MeanInterval, digits: int = 3) -> str:
    return "-" if interval.n == 0 else f"{interval.mean:.{digits}f}"


def difference_cell(interval: MeanInterval, name: str, digits: int = 3) -> str:
    if interval.n < 2:
        return "-"
    text = f"{interval.mean:+.{digits}f} [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"
    if name in TRACKED_ONLY:
        text += f" n={interval.n}"
    if not interval.excludes_zero():
        return text
    better = (interval.mean > 0) == (DIRECTIONS[name] == "higher")
    return f"**{text}**" if better else f"*{text}*"


def row_table(result: dict, rows: list[Row]) -> list[str]:
    """Per-row rates and means (ball metrics over tracked clips, n shown)."""
    lines = ["| row | calls | tracked | blank | partly blank | ballistic (px) | n tracked |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        calls = np.mean(result["rows"][row.label()]["calls"])
        tracked, blank, partly, ballistic = (mean_interval(values(result, row, n))
                                             for n in ("tracked", "blank", "partly_blank", "ballistic"))
        lines.append(f"| {row.label()} | {calls:.1f} | {rate_cell(tracked)} | {rate_cell(blank)} | "
                     f"{rate_cell(partly)} | {rate_cell(ballistic)} | {ballistic.n} |")
    return lines


def comparison_table(comparisons: list[Comparison], names: tuple[str, ...], with_verdict: bool) -> list[str]:
    header = "| row | against | " + " | ".join(f"Δ {n}" for n in names) + (" | verdict |" if with_verdict else " |")
    lines = [header, "|" + "---|" * (len(names) + 2 + with_verdict)]
    for c in comparisons:
        cells = " | ".join(difference_cell(c.differences[n], n) for n in names)
        verdict = f" | {c.verdict()} |" if with_verdict else " |"
        lines.append(f"| {c.row.label()} | {c.reference.label()} | {cells}{verdict}")
    return lines


def write_report(folder: Path, out: Path) -> Path:
    """study.md (and the figures) from every checkpoint's results in ``folder``."""
    from .plots import save_curve_figure, save_headline_figure

    results = load(folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = gate_lines(results)
    name, registered = reported_headline(results)
    if name is not None:
        against, pairs, level = headline_comparisons(results[name])
        lines += headline_lines(results[name], name, against, pairs, level, registered)
        save_headline_figure(against, out / "physics_study.png")
        (out / "summary.md").write_text("\n".join(summary_lines(results[name], against)) + "\n")
    lines += curve_lines(results)
    save_curve_figure(*curve_points(results), out / "physics_quality_curve.png")
    (out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out / "study.md"


def curve_points(results: dict[str, dict]) -> tuple[dict, list]:
    """What the quality-curve figure draws, over the checkpoints with a gate and every curve row: per
    curve row, (gate share tracked, Δ tracked, Δ ballistic) against matched Euler; Euler 20's blank rate."""
    rows = curve_rows()
    done = {n: r for n, r in results.items() if "gate" in r and all(x.label() in r["rows"] for x in rows)}
    quality = {n: r["gate"]["checks"]["tracked"]["value"] for n, r in done.items()}
    curves = {}
    for row in (r for r in rows if r.kind != "euler"):
        found = sorted((quality[n], compare(r, row, matching_euler(row, rows), 0.95).differences) for n, r in done.items())
        curves[(row.label(), row.kind)] = [(q, d["tracked"].mean, d["ballistic"].mean) for q, d in found]
    blank = sorted((quality[n], float(np.mean(values(r, Row("euler"), "blank")))) for n, r in done.items())
    return curves, blank


def gate_lines(results: dict[str, dict]) -> list[str]:
    lines = ["## Quality gate (Euler 20, uniform grid, gate seeds)", "",
             "| checkpoint | seeds | tracked | permanence (limit) | size (limit) | blank | passed |", "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        gate = result.get("gate")
        if gate:
            c = gate["checks"]
            lines.append(f"| {name} | {gate['seeds']} | {c['tracked']['value']:.3f} | {c['permanence']['value']:.4f} "
                         f"({c['permanence']['limit']:.4f}) | {c['size']['value']:.4f} ({c['size']['limit']:.4f}) | "
                         f"{gate['blank']:.3f} | {'yes' if gate['passed'] else 'no'} |")
    chosen, demo = headline_name(results), demo_name(results)
    return lines + ["", f"Registered headline model: {chosen or 'none (no judged checkpoint passed the gate)'}; "
                        f"demo model: {demo or 'the shipped weights (no checkpoint passed the gate)'}.", ""]


def headline_lines(result: dict, name: str, against: list[Comparison], pairs: list[Comparison],
                   level: float, registered: bool) -> list[str]:
    seeds = len(next(iter(result["rows"].values()))["calls"])
    lines = [f"## Headline rows ({name}, {seeds} paired seeds)", ""]
    if not registered:
        lines += ["**Deviation from the registration:** no checkpoint passed the registered gate, so these rows "
                  f"run on {name}, which failed it (docs/PHYSICS_STUDY.md, Deviations). The decision rules are "
                  "applied as registered.", ""]
    lines += row_table(result, headline_rows())
    lines += ["", f"Paired differences against Euler with the same model calls on the same grid: mean "
              f"[simultaneous {100 * level:.3f}% interval, Bonferroni over {len(PRIMARY) * (len(against) + len(pairs))} "
              "comparisons]. Ball metrics over the seeds tracked in both rows (n). **bold** / *italic*: the interval "
              "excludes 0 in P&P's favour / against it.", ""]
    lines += comparison_table(against, ("tracked", "blank", "partly_blank", "ballistic"), True)
    lines += ["", "Secondary metrics, same intervals:", ""]
    lines += comparison_table(against, ("permanence", "shape", "size", "flicker", "background"), False)
    lines += ["", "P&P against Restart on the same window (equal model calls):", ""]
    lines += comparison_table(pairs, ("tracked", "blank", "ballistic"), False)
    chosen, meets = selected_placement(against)
    lines += ["", f"Selected placement for the demo: {chosen.row.label()} "
              f"({'meets the rule' if meets else 'no row met the rule; highest tracked difference'}).", ""]
    return lines


def summary_lines(result: dict, against: list[Comparison]) -> list[str]:
    """The short table README shows: the paper's placement on each grid, and the P&P and Restart rows of
    the uniform grid, each against Euler with the same calls."""
    shown = [c for c in against if c.row.kind != "broken" and (c.row.name == "published" or c.row.shift == 1.0)]
    lines = ["| row | calls | tracked | blank | Δ tracked | Δ ballistic (px) | verdict |", "|---|---|---|---|---|---|---|"]
    for c in shown:
        tracked, blank = (mean_interval(values(result, c.row, n)).mean for n in ("tracked", "blank"))
        lines.append(f"| {c.row.label()} | {c.row.planned_calls} | {tracked:.3f} | {blank:.3f} | "
                     f"{difference_cell(c.differences['tracked'], 'tracked')} | "
                     f"{difference_cell(c.differences['ballistic'], 'ballistic')} | {c.verdict()} |")
    return lines


def curve_lines(results: dict[str, dict]) -> list[str]:
    rows = curve_rows()
    done = {n: r for n, r in results.items() if "gate" in r and all(x.label() in r["rows"] for x in rows)}
    lines = [f"## Model-quality curve (uniform grid, first {CURVE_SEEDS} study seeds, plain 95% intervals)", ""]
    header = "| row | " + " | ".join(f"{n} (gate tracked {r['gate']['checks']['tracked']['value']:.3f})"
                                     for n, r in done.items()) + " |"
    for name in ("tracked", "blank", "ballistic"):
        lines += [f"Δ {name} against Euler with the same calls:", "", header, "|" + "---|" * (len(done) + 1)]
        for row in (r for r in rows if r.kind != "euler"):
            cells = [difference_cell(compare(_first(r, CURVE_SEEDS), row, matching_euler(row, rows), 0.95)
                                     .differences[name], name) for r in done.values()]
            lines.append(f"| {row.label()} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Euler 20 on the same seeds: " + ", ".join(
        f"{n} tracked {np.mean(values(_first(r, CURVE_SEEDS), Row('euler'), 'tracked')):.3f}, "
        f"blank {np.mean(values(_first(r, CURVE_SEEDS), Row('euler'), 'blank')):.3f}" for n, r in done.items()), ""]
    lines += ["Contrast of the clean prediction after each re-noise at sigma 0.8, relative to before the first "
              "(64 seeds):", ""]
    for name, result in results.items():
        if "contrast" in result:
            lines.append(f"- {name}: " + ", ".join(f"{v:.3f}" for v in result["contrast"]))
    return lines


def _first(result: dict, seeds: int) -> dict:
    """``result`` restricted to its first ``seeds`` seeds (the curve's share of a headline run)."""
    rows = {label: {**row, "calls": row["calls"][:seeds],
                    "metrics": {m: v[:seeds] for m, v in row["metrics"].items()}} for label, row in result["rows"].items()}
    return {**result, "rows": rows}
