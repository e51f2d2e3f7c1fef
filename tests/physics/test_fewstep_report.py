"""The few-step study's decision rule on made-up results whose answer is known: a row that clearly helps
is chosen, a row that loses clips or blanks them is not, and the two fallbacks of the rule."""
import numpy as np
import pytest

from pnp_kernels.physics import fewstep_report
from pnp_kernels.physics.fewstep_rows import candidate_rows, student_rows, teacher_rows
from pnp_kernels.physics.rows import matching_euler

SEEDS = 1024


def _metrics(rng, tracked_rate: float, blank_rate: float = 0.01, ballistic: float = 1.0) -> dict:
    tracked = (rng.random(SEEDS) < tracked_rate).astype(float)
    blank = (rng.random(SEEDS) < blank_rate).astype(float)
    residual = np.where(tracked == 1, rng.normal(ballistic, 0.3, SEEDS), np.nan)
    return {"tracked": tracked.tolist(), "blank": blank.tolist(),
            "ballistic": [None if np.isnan(v) else float(v) for v in residual]}


def _results(changes: dict) -> dict:
    """Every row equal to its matched Euler row (same per-seed values) except the rows named in
    ``changes``: label -> (tracked rate, blank rate, ballistic mean) drawn afresh."""
    rng = np.random.default_rng()
    rows = {f"teacher: {r.label()}": {"metrics": _metrics(rng, 0.8)} for r in teacher_rows()}
    student = student_rows()
    for row in student:
        if row.kind == "euler":
            rows[f"student: {row.label()}"] = {"metrics": _metrics(rng, 0.75)}
    for row in student:
        if row.kind != "euler":
            same = rows[f"student: {matching_euler(row, student).label()}"]["metrics"]
            rows[f"student: {row.label()}"] = {"metrics": dict(same)}
    for label, (tracked, blank, ballistic) in changes.items():
        rows[f"student: {label}"] = {"metrics": _metrics(rng, tracked, blank, ballistic)}
    return {"seeds": list(range(SEEDS)), "rows": rows}


def _row(plan: str, tau: float):
    return next(r for r in candidate_rows() if r.plan == plan and r.tau == tau)


def test_the_row_that_helps_most_without_harm_is_chosen_with_its_tau():
    best, good, losing, blanking = (_row("f0.3-0.7:1", 0.25), _row("f0.7-1:2", 0.0), _row("f0.1-0.5:1", 0.0),
                                    _row("f0.1-1:3", 0.25))
    results = _results({best.label(): (0.92, 0.01, 1.0), good.label(): (0.86, 0.01, 1.0),
                        losing.label(): (0.55, 0.01, 1.0), blanking.label(): (0.95, 0.2, 1.0)})
    verdicts = {c.row: c.verdict() for c in fewstep_report.candidates(results)}
    assert verdicts[best] == verdicts[good] == "helps"
    assert verdicts[losing] == verdicts[blanking] == "harms"  # fewer tracked clips; more blank clips
    assert sum(v == "neutral" for v in verdicts.values()) == len(verdicts) - 4  # equal to their Euler rows
    decision = fewstep_report.decide(results)
    assert (decision.preset, decision.tau, decision.qualified) == ("f0.3-0.7:1", 0.25, True)
    text = "\n".join(fewstep_report.report_lines(results))
    assert "`distilled` = `f0.3-0.7:1` with tau 0.25" in text and "Secondary rows: not sampled" in text


def test_a_lower_residual_helps_only_without_a_significant_loss_of_clips():
    residual, both = _row("f0.3-1:1", 0.0), _row("f0.1-0.7:2", 0.0)
    results = _results({residual.label(): (0.75, 0.01, 0.6), both.label(): (0.6, 0.01, 0.5)})
    verdicts = {c.row: c.verdict() for c in fewstep_report.candidates(results)}
    assert verdicts[residual] == "helps" and verdicts[both] == "harms"
    assert fewstep_report.decide(results).preset == "f0.3-1:1"


def test_without_a_qualifying_row_the_largest_harmless_estimate_then_the_empty_plan():
    small = _row("f0.7-1:1", 0.25)
    results = _results({small.label(): (0.76, 0.01, 1.0)})  # not significant after Holm
    decision = fewstep_report.decide(results)
    assert not decision.qualified and decision.preset  # some non-harming row's estimate is the largest
    harmful = _results({r.label(): (0.5, 0.01, 1.0) for r in candidate_rows()})
    decision = fewstep_report.decide(harmful)
    assert (decision.preset, decision.tau, decision.qualified) == ("", None, False)


def test_missing_rows_are_refused():
    results = _results({})
    del results["rows"][f"student: {candidate_rows()[0].label()}"]
    with pytest.raises(ValueError, match="lack the row"):
        fewstep_report.decide(results)
