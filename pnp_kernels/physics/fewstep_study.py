"""The few-step study's rows (docs/FEWSTEP_PREREG.md) and the run that samples them once the student
has passed its gate: ``python -m pnp_kernels.physics.fewstep_study --student DIR/weights.safetensors``.

Every row samples the 1024 held-out study seeds (paired across rows by seed) in the physics study's
batches with its per-clip metrics (physics/study.py ``measure_row``); the results go to
DIR/fewstep_study.json, one row at a time, so a stopped run resumes at the first row it lacks.
The run refuses a student without a passed gate record (DIR/gate.json, physics/fewstep_gate.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .distill import STUDY_SEEDS, file_digest
from .fewstep_gate import student_and_teacher
from .model import SHIPPED_WEIGHTS, load_weights
from .rows import Row, matched_euler
from .study import measure_row

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


def passed_gate(student_path: Path) -> dict:
    """The student's gate record, if it passed on this very file; else a ValueError saying why not."""
    record_path = Path(student_path).parent / "gate.json"
    if not record_path.is_file():
        raise ValueError(f"no gate record at {record_path}: run `python -m pnp_kernels.physics.fewstep_gate "
                         f"--student {student_path}` first")
    record = json.loads(record_path.read_text())
    if not record["gate"]["passed"] or record.get("student_digest") != file_digest(student_path):
        raise ValueError(f"{student_path} has not passed the few-step gate ({record_path}); the study does not run")
    return record


def run_study(student_path: Path, teacher_path: Path = SHIPPED_WEIGHTS, seeds=STUDY_SEEDS) -> Path:
    """Sample every row not yet in the results file; returns its path."""
    record = passed_gate(student_path)
    if record.get("teacher_digest") != file_digest(teacher_path):
        raise ValueError(f"the gate judged {student_path} against another teacher than {teacher_path}")
    out = Path(student_path).parent / "fewstep_study.json"
    results = json.loads(out.read_text()) if out.is_file() else {"seeds": list(seeds), "rows": {}}
    if results["seeds"] != list(seeds):
        raise ValueError(f"{out} holds rows of other seeds")
    for who, path, rows in (("student", student_path, student_rows()), ("teacher", teacher_path, teacher_rows())):
        model = load_weights(path)
        for row in rows:
            key = f"{who}: {row.label()}"
            if key not in results["rows"]:
                results["rows"][key] = measure_row(row, list(seeds), model)
                partial = out.with_suffix(".partial")
                partial.write_text(json.dumps(results) + "\n")
                partial.replace(out)  # the file holds whole rows only
                print(f"  {key}: {results['rows'][key]['seconds']}s", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    args = student_and_teacher("The few-step study (docs/FEWSTEP_PREREG.md); needs a student that passed its gate.", argv)
    started = time.perf_counter()
    try:
        out = run_study(args.student, args.teacher)
    except ValueError as error:  # no passed gate, another teacher or other seeds: nothing was sampled
        raise SystemExit(f"error: {error}") from None
    print(f"written to {out} ({time.perf_counter() - started:.0f}s, 1 thread)")


if __name__ == "__main__":
    main()
