"""Tables and the preset decision of the few-step study (docs/FEWSTEP_PREREG.md) from its results:
``python -m pnp_kernels.physics.fewstep_report --student DIR/weights.safetensors --out FOLDER``.

Every comparison is paired by seed (row minus reference). The primary family, each P&P candidate row
against the student's Euler row with the same planned calls on tracked and on ballistic (over the seeds
tracked in both rows), is corrected by Holm's step-down method at a family-wise error rate of 0.05, and
the blank-clip guard family likewise, separately. The decision rule then picks the ``distilled`` preset.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..statistics import MeanInterval, bonferroni_level, holm_significant, mean_interval, two_sided_p
from .fewstep_rows import (BROKEN_PLAN, EMPTY_READINGS, EQUAL_CALLS_PLAN, STEPS, candidate_rows, secondary_rows,
                           student_rows, teacher_rows)
from .rows import Row, matching_euler

RESULTS_NAME = "fewstep_study"  # DIR/fewstep_study.json beside the student
FAMILY_ERROR = 0.05
PRIMARY = ("tracked", "ballistic")
GUARD = "blank"
SHOWN = ("tracked", "blank", "ballistic")


def load_results(folder: Path) -> dict:
    path = Path(folder) / f"{RESULTS_NAME}.json"
    if not path.is_file():
        raise ValueError(f"no few-step study results at {path}")
    return json.loads(path.read_text())


def per_seed(results: dict, who: str, row: Row, metric: str) -> np.ndarray:
    key = f"{who}: {row.label()}"
    if key not in results["rows"]:
        raise ValueError(f"the results lack the row {key!r}: run the study to the end first")
    return np.array([np.nan if v is None else v for v in results["rows"][key]["metrics"][metric]], dtype=float)


@dataclass(frozen=True)
class Difference:
    """One metric of ``row - reference`` over paired seeds: plain 95% and simultaneous intervals, the
    z-test's p-value and whether it is significant after the family's correction."""

    plain: MeanInterval
    simultaneous: MeanInterval
    p: float
    significant: bool = False

    def below_zero(self) -> bool:
        return self.significant and self.plain.mean < 0

    def above_zero(self) -> bool:
        return self.significant and self.plain.mean > 0


def difference(results: dict, row: tuple[str, Row], reference: tuple[str, Row], metric: str,
               level: float = 0.95) -> Difference:
    diff = per_seed(results, *row, metric) - per_seed(results, *reference, metric)
    return Difference(mean_interval(diff), mean_interval(diff, level), two_sided_p(diff))


@dataclass(frozen=True)
class Candidate:
    """A P&P row against its matched Euler row, with its verdict by the pre-registered rule."""

    row: Row
    reference: Row
    differences: dict[str, Difference]

    @property
    def helps(self) -> bool:
        tracked, ballistic = self.differences["tracked"], self.differences["ballistic"]
        return tracked.above_zero() or (ballistic.below_zero() and not tracked.below_zero())

    @property
    def harms(self) -> bool:
        return self.differences["tracked"].below_zero() or self.differences[GUARD].above_zero()

    @property
    def preset(self) -> str:
        return self.row.plan  # the placement with its K: tau is a sampler setting

    def verdict(self) -> str:
        return "harms" if self.harms else "helps" if self.helps else "neutral"


def candidates(results: dict) -> list[Candidate]:
    """Every candidate row with its differences, Holm-corrected per family."""
    rows, level = student_rows(), bonferroni_level(len(PRIMARY) * len(candidate_rows()), 1 - FAMILY_ERROR)
    raw = [(row, matching_euler(row, rows)) for row in candidate_rows()]
    found = [{metric: difference(results, ("student", row), ("student", reference), metric, level)
              for metric in (*PRIMARY, GUARD)} for row, reference in raw]
    for family in (PRIMARY, (GUARD,)):
        tests = [(i, metric) for i in range(len(found)) for metric in family]
        flags = holm_significant([found[i][metric].p for i, metric in tests], FAMILY_ERROR)
        for (i, metric), flag in zip(tests, flags):
            found[i][metric] = replace(found[i][metric], significant=flag)
    return [Candidate(row, reference, d) for (row, reference), d in zip(raw, found)]


@dataclass(frozen=True)
class Decision:
    preset: str  # "" for the empty plan
    tau: float | None
    qualified: bool  # a (plan, K) helped without harming
    reason: str


def decide(results: dict) -> Decision:
    """The ``distilled`` preset by the pre-registered rule (docs/FEWSTEP_PREREG.md, "Decision rule")."""
    judged = candidates(results)
    qualifying = [c for c in judged if c.helps and not c.harms]
    if qualifying:
        best = max(qualifying, key=lambda c: (c.differences["tracked"].plain.mean,
                                              -c.differences["ballistic"].plain.mean, -c.row.planned_calls))
        return Decision(best.preset, best.row.tau, True, "helps and does not harm against Euler at the same calls")
    safe = [c for c in judged if not c.harms]
    if safe:
        best = max(safe, key=lambda c: c.differences["tracked"].plain.mean)
        return Decision(best.preset, best.row.tau, False, "no placement beat spending the same calls on Euler "
                                                          "steps; the non-harming row with the largest tracked estimate")
    return Decision("", None, False, "every row harms: P&P is not recommended at 4 steps on this evidence")


def _cell(d: Difference, name: str, simultaneous: bool = True) -> str:
    plain, wide = d.plain, d.simultaneous
    if plain.n < 2:
        return "-"
    text = f"{plain.mean:+.3f} [{plain.low:+.3f}, {plain.high:+.3f}]"
    if simultaneous:
        text += f" [{wide.low:+.3f}, {wide.high:+.3f}]"
    if name == "ballistic":
        text += f" n={plain.n}"
    return f"**{text}**" if d.significant else text


def _rate(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    return f"{finite.mean():.3f}" if len(finite) else "-"


def euler_table(results: dict) -> list[str]:
    lines = ["| model | steps = calls | tracked | blank | ballistic (px, tracked clips) | n tracked |", "|---|---|---|---|---|---|"]
    for who, rows in (("student", [r for r in student_rows() if r.kind == "euler"]), ("teacher", teacher_rows())):
        for row in rows:
            ballistic = per_seed(results, who, row, "ballistic")
            lines.append(f"| {who} | {row.num_steps} | {_rate(per_seed(results, who, row, 'tracked'))} | "
                         f"{_rate(per_seed(results, who, row, 'blank'))} | {_rate(ballistic)} | "
                         f"{int(np.isfinite(ballistic).sum())} |")
    return lines


def candidate_table(judged: list[Candidate]) -> list[str]:
    lines = ["| row | calls (mean) | against | Δ tracked | Δ ballistic (px) | Δ blank | verdict |", "|---|---|---|---|---|---|---|"]
    for c in judged:
        lines.append(f"| {c.row.label()} | {c.row.planned_calls} | {c.reference.label()} | "
                     f"{_cell(c.differences['tracked'], 'tracked')} | {_cell(c.differences['ballistic'], 'ballistic')} | "
                     f"{_cell(c.differences[GUARD], GUARD)} | {c.verdict()} |")
    return lines


def descriptive_table(results: dict, pairs: list[tuple[tuple[str, Row], tuple[str, Row]]]) -> list[str]:
    lines = ["| row | against | " + " | ".join(f"Δ {m}" for m in SHOWN) + " |", "|---|---|---|---|---|"]
    for row, reference in pairs:
        cells = " | ".join(_cell(difference(results, row, reference, m), m, simultaneous=False) for m in SHOWN)
        lines.append(f"| {row[0]} {row[1].label()} | {reference[0]} {reference[1].label()} | {cells} |")
    return lines


def descriptive_pairs() -> list[tuple[tuple[str, Row], tuple[str, Row]]]:
    rows = student_rows()
    equal = next(r for r in rows if r.plan == EQUAL_CALLS_PLAN)
    broken = next(r for r in rows if r.kind == "broken")
    pairs = [(("student", equal), ("student", Row("euler", 19))), (("student", equal), ("teacher", Row("euler", 19))),
             (("student", broken), ("student", matching_euler(broken, rows)))]
    return pairs + [(("student", r), ("teacher", r)) for r in rows if r.kind == "euler"]


def secondary_lines(results: dict, decision: Decision) -> list[str]:
    rows = secondary_rows(decision.preset) if decision.preset else []
    if not rows or any(f"student: {r.label()}" not in results["rows"] for r in rows):
        return ["Secondary rows: not sampled (`python -m pnp_kernels.physics.fewstep_study --secondary`)."]
    pairs = [(("student", r), ("student", matching_euler(r, rows))) for r in rows if r.kind == "pnp"]
    return ["Secondary rows (8 steps, K = 1; descriptive, plain 95% intervals):", "", *descriptive_table(results, pairs)]


def report_lines(results: dict, gate: dict | None = None) -> list[str]:
    judged, decision = candidates(results), decide(results)
    primary = len(PRIMARY) * len(judged)
    lines = [f"# Few-step study: {len(results['seeds'])} held-out seeds per row", ""]
    if gate is not None:
        four, twenty = gate["student_rows"]["4"], gate["teacher_rows"]["20"]
        lines += [f"Gate ({gate['seeds']} gate seeds): {'passed' if gate['gate']['passed'] else 'FAILED'}; student "
                  f"Euler 4 tracked {four['tracked']:.3f}, blank {four['blank']:.3f}; teacher Euler 20 tracked "
                  f"{twenty['tracked']:.3f}, blank {twenty['blank']:.3f}.", ""]
    lines += ["## Euler rows", "", *euler_table(results), "",
              f"## P&P at {STEPS} steps against the student's Euler with the same calls", "",
              f"Each cell: mean [95%] [simultaneous, level 1 - 0.05/{primary}]; **bold**: significant after Holm "
              f"({primary} primary tests; the {len(judged)} blank-clip tests form their own family).", "",
              *candidate_table(judged), "",
              "## Decision (pre-registered rule)", "",
              f"`distilled` = `{decision.preset or 'none'}`" + (f" with tau {decision.tau:g}" if decision.tau is not None
                                                               else "") + f": {decision.reason}.", "",
              "## Descriptive comparisons (plain 95% intervals)", "", *descriptive_table(results, descriptive_pairs()), "",
              f"The \"2-5:3\" plan read as fractions or sigmas ({', '.join(f'`{r}`' for r in EMPTY_READINGS)}) refines no "
              f"step at {STEPS} steps: those rows are Euler {STEPS} by construction; read as step indices it is "
              f"`2-3:3` (C5 with K = 3 above). The negative control is `{BROKEN_PLAN}` with 10x perturbation noise.", "",
              *secondary_lines(results, decision)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The few-step study's tables and preset decision (docs/FEWSTEP_PREREG.md).")
    parser.add_argument("--student", type=Path, required=True, help="student weights; the results lie beside them")
    parser.add_argument("--out", type=Path, required=True, help="markdown file for the report")
    args = parser.parse_args(argv)
    folder = args.student.parent
    try:
        results = load_results(folder)
        gate_path = folder / "gate.json"
        text = "\n".join(report_lines(results, json.loads(gate_path.read_text()) if gate_path.is_file() else None))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
