"""The few-step study's rows (docs/FEWSTEP_PREREG.md): the student's Euler rows, the P&P candidates at
4 steps, the equal-calls row and the negative control, the teacher's Euler rows, and the secondary rows
at 8 steps for the selected plan."""
from __future__ import annotations

from .rows import Row, matched_euler

STEPS = 4
# Candidate plans as fractions of the run; at 4 steps they are every contiguous placement within 1-3.
CANDIDATES = {"C1": "f0.1-0.5", "C2": "f0.3-0.7", "C3": "f0.7-1", "C4": "f0.1-0.7", "C5": "f0.3-1", "C6": "f0.1-1"}
ITERATIONS = (1, 2, 3)
TAUS = (0.0, 0.25)
EQUAL_CALLS_PLAN = "1-3:5"  # 4 steps + 15 refinement calls: against the teacher's Euler 19
BROKEN_PLAN = "1-3:3"
# "2-5:3" read as the fraction and the sigmas of steps 2-5 of the published 50-step run: no step of a
# 4-step run lies in either, so these rows equal Euler 4 by construction and are not sampled.
EMPTY_READINGS = ("f0.04-0.12:3", "s0.96-0.88:3")
STUDENT_EULER = (*range(4, 14), 19)
TEACHER_EULER = (*range(4, 14), 19, 20)
SECONDARY_STEPS = 8


def candidate_rows() -> list[Row]:
    return [Row("pnp", STEPS, plan=f"{plan}:{k}", tau=tau, name=f"{name} {plan}:{k}")
            for name, plan in CANDIDATES.items() for k in ITERATIONS for tau in TAUS]


def student_rows() -> list[Row]:
    """The student's rows: Euler at every call count compared with, the candidates, the equal-calls row
    and the negative control."""
    rows = [Row("euler", n) for n in STUDENT_EULER] + candidate_rows()
    rows += [Row("pnp", STEPS, plan=EQUAL_CALLS_PLAN, name=f"equal calls {EQUAL_CALLS_PLAN}"),
             Row("broken", STEPS, plan=BROKEN_PLAN, name=BROKEN_PLAN)]
    return rows + matched_euler(rows)  # nothing new: every matched count is in STUDENT_EULER


def teacher_rows() -> list[Row]:
    return [Row("euler", n) for n in TEACHER_EULER]


def secondary_rows(selected_plan: str) -> list[Row]:
    """The selected plan's placement and C1 at 8 steps with K = 1, tau 0 and 0.25, and the student's
    Euler rows with the same calls (docs/FEWSTEP_PREREG.md, "Secondary rows")."""
    placements = dict.fromkeys([selected_plan.rsplit(":", 1)[0], CANDIDATES["C1"]])  # one row each if equal
    rows = [Row("pnp", SECONDARY_STEPS, plan=f"{placement}:1", tau=tau, name=f"{placement}:1 at {SECONDARY_STEPS} steps")
            for placement in placements if placement for tau in TAUS]
    return rows + matched_euler(rows)


def study_rows(secondary_plan: str | None = None) -> list[tuple[str, Row]]:
    """(who, row) of every primary row, or of the secondary rows for the selected plan."""
    if secondary_plan is not None:
        return [("student", row) for row in secondary_rows(secondary_plan)]
    return [("student", row) for row in student_rows()] + [("teacher", row) for row in teacher_rows()]
